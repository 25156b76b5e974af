"""Write a lowered module as ONNX: the one exporter behind `archc export` and the onnxruntime backend.

ONNX goes through `torch.onnx.export(..., dynamo=True)` (the torch.export-based exporter,
torch's default since 2.9; needs `onnx` and `onnxscript`, the `export` extra) with the
batch dimension dynamic and named `batch`. The "legacy" exporter is the deprecated
TorchScript-based one (`dynamic_axes`; needs `onnx` but not `onnxscript`).

Torch's exporters trace eager ops; a backend may lower fused ops to fast paths they cannot
express, so `exportable_module` asks the backend for its optional `exportable(graph, origin)`
(the same network, the same parameter names, in eager ops) and loads the module's state into it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from archc.errors import ArchcError

EXPORTERS = ("dynamo", "legacy")
LEGACY_OPSET = 17  # the legacy exporter's default in recent torch


class ExportError(ArchcError):
    """The module could not be exported, or the written file does not reproduce it."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' deprecation warnings and log chatter (e.g. 'torchvision is not installed')."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def output_names(graph: Any) -> list[str]:
    """The ONNX output names of a graph: `output`, or `output0`, `output1`, ... in graph.outputs order."""
    n = len(graph.outputs)
    return ["output"] if n == 1 else [f"output{i}" for i in range(n)]


def missing_packages(engine: str, exporter: str = "dynamo") -> list[str]:
    """The packages an inference backend on `engine` (a package name) and `exporter` needs that are not installed."""
    need = (engine, "onnx", "onnxscript") if exporter == "dynamo" else (engine, "onnx")
    return [name for name in need if importlib.util.find_spec(name) is None]


def runner_fields(graph: Any, origin: str) -> dict[str, Any]:
    """The fields of an inference backend's standalone runner script (its `source()` template) for `graph`.

    Names come from the user (spec file, net): escaped for comments and docstrings, a repr in code.
    """
    from archc.backend import source_text

    shape = "x".join(map(str, graph.input.shape))
    returns = (
        "a dict: " + ", ".join(graph.output_names)
        if graph.output_names
        else ("one array" if len(graph.outputs) == 1 else f"a tuple of {len(graph.outputs)} arrays")
    )
    return {
        "origin": source_text(origin),
        "summary": source_text(
            f"{graph.name}: {graph.params():,} parameters, {graph.macs() / 1e9:.2f} GMACs per {shape} input"
        ),
        "title": source_text(graph.name),
        "onnx_file": f"{graph.name}.onnx",
        "module": graph.name if graph.name.isidentifier() else "this_file",
        "shape": ", ".join(map(str, graph.input.shape)),
        "returns": returns,
        "outputs": output_names(graph),
        "keys": list(graph.output_names),
    }


def _name_batch_dim(path: Path) -> None:
    """Rename the exporter's symbol for the batch dimension (e.g. `s77`) to `batch` everywhere."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    first = g.input[0].type.tensor_type.shape.dim[0]
    old = first.dim_param
    if not old or old == "batch":
        return
    for info in [*g.input, *g.output, *g.value_info]:
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param == old:
                dim.dim_param = "batch"
    onnx.save(model, str(path))


def require(exporter: str) -> None:
    """Check that the packages `exporter` needs are importable.

    Raises:
        ExportError: naming the missing package and how to install it.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown ONNX exporter '{exporter}'", hint=f"exporters: {', '.join(EXPORTERS)}")
    for name in ("onnx", "onnxscript") if exporter == "dynamo" else ("onnx",):
        try:
            importlib.import_module(name)
        except ImportError:
            alt = "; or use the legacy exporter (needs only onnx)" if name == "onnxscript" else ""
            raise ExportError(
                f"ONNX export with torch's {exporter} exporter needs the '{name}' package",
                hint=f"pip install 'archc[export]' (onnx, onnxscript, onnxruntime){alt}",
            ) from None


def export_onnx(module: Any, graph: Any, x: Any, out: Path, opset: int | None, exporter: str) -> str:
    """Write `module` as ONNX with a dynamic batch dimension named `batch`.

    Args:
        module: an eval-mode module in eager ops (see `exportable_module`).
        graph: its graph (for the number of outputs).
        x: an example input batch.
        out: the file to write.
        opset: the ONNX opset; None: the exporter's default.
        exporter: "dynamo" or "legacy".

    Returns:
        How it was written, e.g. "dynamo exporter, opset 20".

    Raises:
        ExportError: a missing package, or the exporter failed.
    """
    import torch

    outs = output_names(graph)
    require(exporter)
    try:
        if exporter == "dynamo":
            with quiet():
                program = torch.onnx.export(
                    module,
                    (x,),
                    dynamo=True,
                    input_names=["input"],
                    output_names=outs,
                    dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
                    opset_version=opset,
                    optimize=True,
                    verbose=False,
                )
                program.save(str(out))
            _name_batch_dim(out)
        else:
            axes = {name: {0: "batch"} for name in ["input", *outs]}
            with quiet():
                torch.onnx.export(
                    module,
                    (x,),
                    str(out),
                    dynamo=False,
                    input_names=["input"],
                    output_names=outs,
                    dynamic_axes=axes,
                    opset_version=opset or LEGACY_OPSET,
                )
    except (ArchcError, OSError):  # an OSError is the output's (write_output names the file)
        raise
    except Exception as exc:  # an exporter failure is reported, not dumped as a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"ONNX export ({exporter} exporter) failed: {first}",
            hint="try the other exporter (--onnx-exporter dynamo|legacy) or another --opset",
        ) from exc
    return f"{exporter} exporter, opset {onnx_opset(out) if exporter == 'dynamo' else opset or LEGACY_OPSET}"


def onnx_opset(path: Path) -> str:
    """The default-domain opset of an ONNX file ("?" when onnx is missing)."""
    try:
        import onnx
    except ImportError:
        return "?"
    model = onnx.load(str(path), load_external_data=False)
    return str(next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?"))


def exportable_module(backend: str, graph: Any, origin: str, module: Any) -> Any:
    """`module` (lowered by `backend` from `graph`) as a module in eager ops that torch's exporters can trace.

    A backend that lowers to fast paths the exporters cannot express provides
    `exportable(graph, origin)`: the same network with the same parameter names in eager ops
    (the torch backend's FusedConv2d, a oneDNN call in CPU inference, becomes conv [+ add] [-> relu]).
    It is loaded with `module`'s state. A backend without it exports its own module.

    Returns:
        An eval-mode module.
    """
    from archc.backend import get_backend

    make = getattr(get_backend(backend), "exportable", None)
    if make is None:
        return module.eval()
    portable = make(graph, origin)
    portable.load_state_dict(module.state_dict())
    return portable.eval()
