"""`archc export`: write a compiled spec as ONNX, TorchScript or standalone PyTorch source.

Every format starts from the torch backend's module (with `--weights` loaded, BN folded in
eval mode) and is checked after writing: the written file is loaded back and run on a batch
of another size than the example input, and its outputs are compared with the module's.

ONNX goes through `torch.onnx.export(..., dynamo=True)` (the torch.export-based exporter,
torch's default since 2.9; needs `onnx` and `onnxscript`, the `export` extra) with the
batch dimension dynamic and named `batch`. `--onnx-exporter legacy` uses the deprecated
TorchScript-based exporter instead (`dynamic_axes`; needs `onnx` but not `onnxscript`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click

from archc.commands.options import fail, mode_option, parse_sets, sets_option
from archc.errors import ArchcError
from archc.onnx_export import ExportError, export_onnx, exportable_module, quiet

FORMATS = ("onnx", "torchscript", "python")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "python": ".py"}
TOLERANCE = 1e-4  # relative to the output's magnitude (at least 1)


def _outputs(result: Any) -> list[Any]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _max_diff(got: list[Any], want: list[Any]) -> tuple[float, float]:
    """(max |got - want| over all outputs, the outputs' magnitude, at least 1)."""
    import numpy as np

    if len(got) != len(want):
        raise ExportError(f"the exported model returns {len(got)} output(s), the module {len(want)}")
    diff, scale = 0.0, 1.0
    for g, w in zip(got, want):
        g = np.asarray(g.detach().numpy() if hasattr(g, "detach") else g, dtype=np.float64)
        w = np.asarray(w.detach().numpy(), dtype=np.float64)
        if g.shape != w.shape:
            raise ExportError(f"the exported model returns shape {g.shape}, the module {w.shape}")
        diff = max(diff, float(np.abs(g - w).max(initial=0.0)))
        scale = max(scale, float(np.abs(w).max(initial=0.0)))
    return diff, scale


def check_onnx(path: Path, module: Any, x: Any) -> str:
    """Run the ONNX file with onnxruntime against the module; raise when they disagree."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "not checked: onnxruntime is not installed (pip install 'archc[export]')"
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = _outputs(module(x))
    return _verdict("onnxruntime", got, want, x)


def portable_module(b: Any) -> Any:
    """The build's module in eager ops, with its (folded) state, for ONNX and TorchScript.

    The torch backend routes fused ops through CPU-only fast paths (oneDNN calls) that neither
    exporter can express; see `archc.onnx_export.exportable_module`.
    """
    return exportable_module(b.backend, b.graph, os.path.basename(b.origin), b.module)


def export_torchscript(module: Any, x: Any, out: Path) -> str:
    """torch.jit.script the module (trace it only when scripting fails) and save it."""
    import torch

    with quiet():
        try:
            scripted = torch.jit.script(module)
            how = "torch.jit.script"
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(
                f"warning: torch.jit.script failed ({first}); falling back to torch.jit.trace with a "
                f"batch of {x.shape[0]}: the file replays this forward's ops only",
                err=True,
            )
            try:
                scripted = torch.jit.trace(module, (x,))
            except Exception as exc2:
                raise ExportError(f"TorchScript export failed: script: {first}; trace: {exc2}") from exc2
            how = "torch.jit.trace (script failed)"
        with open(out, "wb") as f:  # a Python file object: a write error is an OSError, not a RuntimeError
            torch.jit.save(scripted, f)
    return how


def check_torchscript(path: Path, module: Any, x: Any) -> str:
    import torch

    with quiet():
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return _verdict("torch.jit.load", _outputs(loaded(x)), _outputs(module(x)), x)


def python_source(b: Any, out: Path, weights_file: Path | None) -> tuple[str, str]:
    """The torch backend's standalone source with a docstring on how to use it; (source, class name)."""
    from archc.backend import get_backend, source_text

    g = b.graph
    src = get_backend(b.backend).source(g, origin=os.path.basename(b.origin))
    classes = re.findall(r"^class (\w+)\(nn\.Module\):", src, flags=re.MULTILINE)
    if not classes:
        raise ExportError(f"the {b.backend} backend's source defines no nn.Module class")
    cls = classes[-1]  # the net's class comes last, after Scope and any helpers
    mod = out.stem
    # every name below lands in the docstring: source_text keeps it from ending it
    if mod.isascii() and mod.isidentifier():
        imp = f"from {mod} import {cls}  # this file"
    else:
        imp = f"import runpy\n    {cls} = runpy.run_path({source_text(repr(out.name))})[{cls!r}]  # this file"
    shape = "x".join(map(str, g.input.shape))
    origin = source_text(os.path.basename(b.origin))
    lines = [
        f'"""{source_text(g.name)} as plain PyTorch, written by `archc export` from {origin} (mode {b.mode}).',
        "",
        f"This file imports only torch. {cls}() takes no arguments; its forward takes an Nx{shape} float tensor.",
        "",
    ]
    if weights_file is not None:
        wname = weights_file.name
        # a plain name as before; any other as an escaped repr, so the docstring's example still runs
        wname = f'"{wname}"' if source_text(wname) == wname else source_text(repr(wname))
        folded = " (BN folded into the convs)" if any(n.attrs.get("folded_bn") for n in g.nodes()) else ""
        lines += [
            f"The weights are in {source_text(weights_file.name)}{folded}, beside this file; reading them also",
            "needs the safetensors package (pip install safetensors):",
            "",
            "    import torch",
            "    from safetensors.torch import load_file",
            f"    {imp}",
            "",
            f"    model = {cls}()",
            f"    model.load_state_dict(load_file({wname}))",
            "    model.eval()",
            f"    y = model(torch.randn(1, {', '.join(map(str, g.input.shape))}))",
        ]
    else:
        lines += [
            "Exported without --weights: the model starts from init_weights (He-normal convs).",
            "",
            f"    {imp}",
            "",
            f"    model = {cls}()",
        ]
    lines.append('"""')
    return "\n".join(lines) + "\n" + src, cls


def check_python(src: str, cls: str, module: Any, x: Any) -> str:
    """Execute the written source in a fresh namespace, load the module's state, compare outputs."""
    import torch

    namespace: dict[str, Any] = {"__name__": "archc_export_check"}
    exec(compile(src, "<archc export>", "exec"), namespace)
    fresh = namespace[cls]()
    fresh.load_state_dict(module.state_dict())
    fresh.eval()
    with torch.no_grad():
        return _verdict("the written source", _outputs(fresh(x)), _outputs(module(x)), x)


def _verdict(what: str, got: list[Any], want: list[Any], x: Any) -> str:
    diff, scale = _max_diff(got, want)
    if diff > TOLERANCE * scale:
        raise ExportError(
            f"{what} disagrees with the torch backend: max |difference| {diff:.3g} "
            f"(outputs up to {scale:.3g}) on a batch of {x.shape[0]}",
        )
    return f"checked with {what}: max |difference| to the torch backend {diff:.2g} on a batch of {x.shape[0]}"


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Output format (default: from the suffix of -o: .onnx, .pt/.ts, .py).",
)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint (.safetensors or torch file) in the spec's key space; default: fresh He-normal weights.",
)
@mode_option("eval", "Pass pipeline: eval folds BN into the convs and fuses ops; train keeps every layer and name.")
@sets_option()
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Batch size of the example input the exporters trace with (the batch dimension stays dynamic).",
)
@click.option("--opset", type=click.IntRange(min=7), default=None, help="ONNX opset (default: the exporter's).")
@click.option(
    "--onnx-exporter",
    "exporter",
    type=click.Choice(["dynamo", "legacy"]),
    default="dynamo",
    show_default=True,
    help="dynamo: torch.export-based (needs onnx, onnxscript); legacy: deprecated TorchScript-based (onnx).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for the weights when --weights is not given."
)
@click.option("--check/--no-check", default=True, show_default=True, help="Reload the written file and compare.")
def export(
    spec: Path,
    fmt: str | None,
    out: Path,
    weights: Path | None,
    mode: str,
    sets: tuple[str, ...],
    batch: int,
    opset: int | None,
    exporter: str,
    seed: int,
    check: bool,
) -> None:
    """Compile SPEC and write it as ONNX, TorchScript or standalone PyTorch source.

    The module is put in eval mode before exporting. With --check (the default) the
    written file is loaded back, run on a batch of another size, and compared with the
    torch backend's module (ONNX with onnxruntime, when it is installed).

    \b
    Examples:
      archc export specs/cifar/resnet20.arch --format onnx -o resnet20.onnx
      archc export specs/resnet50.arch -o r50.onnx --weights r50.safetensors --opset 18
      archc export specs/resnet18.arch --format torchscript -o resnet18.pt --mode train
      archc export specs/resnet18.arch --format python -o resnet18.py --weights r18.safetensors
      archc export specs/resnet18.arch -o r18_64.onnx --set input_size=3x64x64 --batch 4
    """
    try:
        fmt = fmt or _format_from_suffix(out)
        lines = _export(spec, fmt, out, weights, mode, parse_sets(sets), batch, opset, exporter, seed, check)
    except ArchcError as err:
        fail(err)
        return
    for line in lines:
        click.echo(line)


def _format_from_suffix(out: Path) -> str:
    suffix = out.suffix.lower()
    for fmt, known in (("onnx", (".onnx",)), ("torchscript", (".pt", ".ts", ".pth")), ("python", (".py",))):
        if suffix in known:
            return fmt
    raise ArchcError(
        f"cannot tell the export format from '{out}'",
        hint="give --format onnx|torchscript|python, or name the file .onnx, .pt or .py",
    )


def _export(
    spec: Path,
    fmt: str,
    out: Path,
    weights: Path | None,
    mode: str,
    overrides: dict[str, str],
    batch: int,
    opset: int | None,
    exporter: str,
    seed: int,
    check: bool,
) -> list[str]:
    import torch

    from archc.api import build, load_weights
    from archc.files import make_dir, save_safetensors, write_output

    if opset is not None and fmt != "onnx":
        raise ArchcError(f"--opset applies to ONNX export, not {fmt}")
    torch.manual_seed(seed)  # before lowering: the initial weights are reproducible
    b = build(spec, mode=mode, overrides=overrides)
    module = b.module
    if weights is not None:
        load_weights(module, weights, b.graph)
    module.eval()
    g = b.graph
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *g.input.shape, generator=gen)
    x_check = torch.randn(batch + 1, *g.input.shape, generator=gen)  # another batch size: dynamic batch
    make_dir(out.parent)
    lines: list[str] = []
    verdict = "not checked (--no-check)"
    how = ""
    if fmt == "onnx":

        def write_onnx(target: Path) -> None:
            nonlocal how
            how = export_onnx(portable_module(b), g, x, target, opset, exporter)

        write_output(out, write_onnx, "ONNX file")
        lines.append(f"wrote {out} (ONNX, {how}; input 'input' batchx{'x'.join(map(str, g.input.shape))})")
        if check:
            verdict = check_onnx(out, module, x_check)
    elif fmt == "torchscript":

        def write_script(target: Path) -> None:
            nonlocal how
            how = export_torchscript(portable_module(b), x, target)

        write_output(out, write_script, "TorchScript file")
        lines.append(f"wrote {out} (TorchScript via {how})")
        if check:
            verdict = check_torchscript(out, module, x_check)
    else:
        w_path = out.with_suffix(".safetensors") if weights is not None else None
        src, cls = python_source(b, out, w_path)
        write_output(out, lambda t: t.write_text(src, encoding="utf-8"), "Python file")
        lines.append(f"wrote {out} (class {cls}; imports only torch)")
        if w_path is not None:
            state = {k: v.contiguous() for k, v in module.state_dict().items()}
            save_safetensors(w_path, state, {"archc_net": g.name, "mode": mode, "format": "pt"})
            lines.append(f"wrote {w_path} ({len(state)} tensors)")
        if check:
            verdict = check_python(src, cls, module, x_check)
    lines.append(verdict)
    return lines
