"""The `archc` command line. Spec errors print with their location and exit with status 2."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from archc.commands import backends, bench, detect, diff, export, graph, inspect, plot, train
from archc.commands import eval as eval_command
from archc.commands import list as list_command
from archc.commands.options import (
    backend_option,
    fail,
    json_option,
    mode_option,
    parse_passes,
    parse_sets,
    passes_option,
    sets_option,
)
from archc.console import make_console
from archc.errors import ArchcError, print_warnings_plainly
from archc.units import si


def _fmt_shape(shape: list[int] | tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _summary(b: Any) -> dict[str, Any]:
    g = b.graph
    return {
        "name": g.name,
        "spec": b.origin,
        "backend": b.backend,
        "mode": b.mode,
        "params": g.params(),
        "macs": g.macs(),
        "nodes": len(g),
        "input_shape": list(g.input.shape),
        "output_shape": list(g.output.shape),
        "stages": g.stages(),
        "outputs": _outputs(g),
        "cut": _cut(g),
        "net_params": g.meta.get("params", {}),
        "frozen": list(g.meta.get("frozen", [])),
        "trainable_params": (
            None if b.module is None else sum(p.numel() for p in b.module.parameters() if p.requires_grad)
        ),
        "passes": [{"name": r.name, "changes": r.changes, "ms": round(r.ms, 3)} for r in b.passes.records],
        "timings_ms": {k: round(v, 3) for k, v in b.timings_ms.items()},
    }


def _cut(g: Any) -> dict[str, Any] | None:
    """Where a detector's per-RoI head starts: the last trunk stage and the RoI size; None for other nets."""
    cut = g.meta.get("cut")
    if not cut:
        return None
    node = g.node(cut["node"])
    return {"after": node.stage, "node": node.name, "size": list(cut["size"]), "channels": node.shape[0]}


def _outputs(g: Any) -> list[dict[str, Any]]:
    """Each output's name and shape; per_roi: it comes from a detector's per-RoI head (after the `cut`)."""
    stages = [row["name"] for row in g.stages()]
    cut = _cut(g)
    head = set(stages[stages.index(cut["after"]) + 1 :]) if cut else set()
    return [
        {"name": name, "shape": list(g.node(node).shape), "per_roi": g.node(node).stage in head}
        for name, node in zip(g.output_names or g.outputs, g.outputs, strict=True)
    ]


def _print_table(s: dict[str, Any]) -> None:
    from rich.table import Table

    console = make_console()
    table = Table(title=f"{s['name']}  ({s['spec']})", title_justify="left")
    table.add_column("stage")
    table.add_column("output", justify="right")
    table.add_column("params", justify="right")
    table.add_column("mult-adds", justify="right")
    table.add_row("input", _fmt_shape(s["input_shape"]), "", "")
    cut = s.get("cut")
    for row in s["stages"]:
        table.add_row(row["name"], _fmt_shape(row["output_shape"]), f"{row['params']:,}", f"{row['macs']:,}")
        if cut and row["name"] == cut["after"]:
            # what follows runs once per RoI, on the cut's channels pooled to the RoI size
            table.add_section()
            roi = _fmt_shape([cut["channels"], *cut["size"]])
            table.add_row("per RoI:", roi, "", "", style="italic")
    table.add_section()
    table.add_row(
        "total" + (" (trunk + 1 RoI)" if cut else ""),
        "" if cut else _fmt_shape(s["output_shape"]),
        f"{s['params']:,} ({si(s['params'])})",
        f"{s['macs']:,} ({si(s['macs'])})",
        style="bold",
    )
    if cut:
        outs = ", ".join(
            f"{o['name']} {_fmt_shape(o['shape'])}{' per RoI' if o['per_roi'] else ''}" for o in s["outputs"]
        )
        table.caption = (
            f"outputs: {outs}. Not in these totals: the RPN and the box classifier and regressor, which "
            "archc.detect adds from the net's parameters."
        )
        table.caption_justify = "left"
    console.print(table)
    t = s["timings_ms"]
    phases = "  ".join(f"{k} {v:.1f} ms" for k, v in t.items())
    passes = ", ".join(f"{p['name']} ({p['changes']})" for p in s["passes"]) or "none"
    console.print(f"{s['nodes']} nodes, backend {s['backend']}, mode {s['mode']}; passes: {passes}")
    console.print(f"{phases}; total {sum(t.values()):.1f} ms")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="archc")
def main() -> None:
    """archc: compile .arch network specs into PyTorch modules.

    \b
    Examples:
      archc build specs/resnet152.arch
      archc build specs/resnet34.arch --set shortcut=A --json
      archc build my_block.arch -o out/ --init
      archc list
      archc build cifar/resnet110
      archc backends

    \b
    Shell completion (bash; zsh and fish in docs/cli.md):
      eval "$(_ARCHC_COMPLETE=bash_source archc)"
    """
    print_warnings_plainly()
    # a file name that is not UTF-8 (surrogate escapes) prints escaped, not as a UnicodeEncodeError
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@sets_option()
@json_option()
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), help="Write IR dump and source here.")
@click.option("--init", "write_init", is_flag=True, help="With -o: also write freshly initialised weights.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --init weights.")
@backend_option("Backend plugin to lower with (`archc backends` lists them).")
@mode_option("train", "Pass pipeline: train keeps every parameter name; eval folds BN and fuses ops.")
@passes_option("Comma-separated pass pipeline (default: the standard one).")
@click.option("--dump-after", "dump_after", multiple=True, metavar="PASS", help="Print the IR after PASS.")
@click.option("--frozen-bn", is_flag=True, help="Every BN a fixed affine from its running statistics (fine-tuning).")
@click.option(
    "--freeze-at",
    type=int,
    default=None,
    metavar="K",
    help="Freeze the stem and the first K stages (requires_grad=False); 0: the stem only.",
)
@click.option(
    "--part",
    type=click.Choice(["trunk", "head"]),
    default=None,
    help="Only the trunk (before the spec's `cut`) or the per-RoI head (after it).",
)
def build(
    spec: Path,
    sets: tuple[str, ...],
    as_json: bool,
    out: Path | None,
    write_init: bool,
    seed: int,
    backend: str,
    mode: str,
    passes: str | None,
    dump_after: tuple[str, ...],
    frozen_bn: bool,
    freeze_at: int | None,
    part: str | None,
) -> None:
    """Parse, check and lower SPEC; print per-stage shapes, params and multiply-adds.

    SPEC is a .arch file or a catalogue name (`archc list`); a file of that name wins.

    \b
    Examples:
      archc build specs/resnet50.arch --set stride_in_1x1=false
      archc build specs/cifar/resnet110.arch --json
      archc build specs/resnet18.arch -o out/ --init
      archc build specs/resnet50.arch --mode eval --dump-after fuse_eval
      archc build specs/resnet101.arch --frozen-bn --freeze-at 1
      archc build specs/detection/faster_rcnn_r101_c4.arch --part head
    """
    from archc.api import build as do_build

    if write_init and out is None:
        raise click.UsageError("--init writes weights into the -o directory; give -o DIR")
    try:
        if write_init:
            import torch

            torch.manual_seed(seed)  # before lowering, so the initial weights are reproducible
        pipeline = parse_passes(passes)
        b = do_build(
            spec,
            backend=backend,
            mode=mode,
            overrides=parse_sets(sets),
            passes=pipeline,
            dump_after=list(dump_after),
            frozen_bn=frozen_bn,
            freeze_at=freeze_at,
            part=part,
        )
        summary = _summary(b)
        if out is not None:
            summary["files"] = _write_outputs(b, out, write_init, seed)
    except ArchcError as err:
        fail(err)
    for name, text in b.passes.dumps.items():
        click.echo(f"# IR after {name}\n{text}", err=as_json)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        _print_table(summary)
        for f in summary.get("files", []):
            click.echo(f"wrote {f}")


def _write_outputs(b: Any, out: Path, write_init: bool, seed: int) -> list[str]:
    from archc.backend import get_backend
    from archc.files import make_dir, save_safetensors, write_output

    make_dir(out)
    g = b.graph
    files = []
    backend = get_backend(b.backend)
    texts = {
        out / f"{g.name}.ir.json": g.dump_json(),
        out / f"{g.name}.py": backend.source(g, origin=os.path.basename(b.origin)),
    }
    for path, text in texts.items():
        write_output(path, lambda t, text=text: t.write_text(text, encoding="utf-8"))
        files.append(str(path))
    # a backend may write files its source needs (the onnxruntime backend's NAME.onnx)
    files.extend(str(p) for p in getattr(backend, "artifacts", lambda *_: [])(b.module, g, out))
    if write_init:
        w_path = out / f"{g.name}.safetensors"
        state = {k: v.contiguous() for k, v in b.module.state_dict().items()}
        save_safetensors(w_path, state, {"archc_net": g.name, "seed": str(seed)}, what="weights")
        files.append(str(w_path))
    return files


# Further commands live in archc/commands/, one module each.
for _command in (
    train.train,
    eval_command.eval_,
    plot.plot,
    detect.detect,
    bench.bench,
    graph.graph,
    backends.backends,
    list_command.list_,
    export.export,
    inspect.inspect,
    diff.diff,
):
    main.add_command(_command)


if __name__ == "__main__":
    main()
