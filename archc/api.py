"""The Python API: compile a spec into a module, or build it with timings for the CLI."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archc.backend import get_backend
from archc.errors import ArchcError, WeightsError
from archc.frontend import MAX_NODES, catalog, elaborate, load
from archc.frontend.loader import looks_like_path
from archc.ir import Graph
from archc.passes import PIPELINES, PassManager

MODES = tuple(PIPELINES)


@dataclass
class Build:
    """Everything one compilation produced.

    Attributes:
        graph: the IR after the passes.
        module: the lowered module (None when lowering was skipped).
        timings_ms: milliseconds per phase: parse, elaborate, passes, lower.
        passes: the PassManager, with per-pass records and dumps.
        origin: how the spec was named.
    """

    graph: Graph
    module: Any
    timings_ms: dict[str, float]
    passes: PassManager
    origin: str
    backend: str = "torch"
    mode: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)


def _origin(spec: str | os.PathLike) -> str:
    # a catalogue name stands for its file, so `resnet50` and `specs/resnet50.arch` lower alike
    return catalog.resolve(spec) if looks_like_path(spec) else "<spec>"


def build(
    spec: str | os.PathLike,
    *,
    backend: str = "torch",
    mode: str = "train",
    overrides: Mapping[str, Any] | None = None,
    passes: list[str] | None = None,
    dump_after: list[str] | None = None,
    lower: bool = True,
    max_nodes: int = MAX_NODES,
    frozen_bn: bool = False,
    freeze_at: int | None = None,
    part: str | None = None,
    backend_options: Mapping[str, Any] | None = None,
) -> Build:
    """Parse, elaborate, run passes and (optionally) lower a spec, timing each phase.

    Args:
        spec: a `.arch` path, a catalogue name (`resnet50`, `cifar/resnet20`; see `list_models`),
            or `.arch` text. A file of that name wins over the catalogue.
        backend: an installed backend name.
        mode: "train" (a trainable module with the spec's parameter names) or "eval"
            (BN folded, ops fused; for inference).
        overrides: net parameter values, like `--set`.
        passes: the pass pipeline (default: `archc.passes.PIPELINES[mode]`).
        dump_after: passes after which to keep a text dump of the IR.
        lower: False stops after the passes (no torch import).
        max_nodes: refuse specs that expand past this many nodes.
        frozen_bn: run `freeze_bn` first: every BN becomes a fixed affine from its running statistics
            (same state_dict keys), also in train mode.
        freeze_at: freeze the stem (the top-level layers before the first block call) and the first
            `freeze_at` stages (top-level block calls): their parameters get requires_grad=False. 0 freezes
            the stem only; None nothing.
        part: "trunk" or "head" of a net with a `cut` (see `Graph.part`); None: the whole net.
        backend_options: keyword options for the backend's lower() (e.g. the onnxruntime backend's
            threads or optimization); backends refuse options they do not know.

    Returns:
        A Build.

    Raises:
        ArchcError: anything wrong with the spec, overrides, passes or backend.
    """
    if mode not in PIPELINES:
        raise ArchcError(f"unknown mode '{mode}'", hint=f"modes: {', '.join(PIPELINES)}")
    t0 = time.perf_counter()
    program = load(spec)
    t1 = time.perf_counter()
    graph = elaborate(program, overrides, max_nodes=max_nodes)
    graph.lint()
    if part is not None:
        graph = _part(graph, part)
    frozen = frozen_stages(graph, freeze_at) if freeze_at is not None else []
    if frozen:
        graph.meta["frozen"] = frozen
    t2 = time.perf_counter()
    pipeline = list(PIPELINES[mode] if passes is None else passes)
    if frozen_bn and "freeze_bn" not in pipeline:
        pipeline.insert(0, "freeze_bn")
    pm = PassManager(pipeline, list(dump_after or []))
    pm.run(graph)
    t3 = time.perf_counter()
    module = None
    origin = _origin(spec)
    if lower:
        module = get_backend(backend).lower(graph, origin=os.path.basename(origin), **dict(backend_options or {}))
        for name, p in module.named_parameters():
            # requires_grad is not touched by train()/eval(), so the freeze survives them
            if name.split(".", 1)[0] in frozen:
                p.requires_grad_(False)
    t4 = time.perf_counter()
    timings = {"parse": t1 - t0, "elaborate": t2 - t1, "passes": t3 - t2, "lower": t4 - t3}
    return Build(graph, module, {k: v * 1e3 for k, v in timings.items()}, pm, origin, backend, mode)


def _part(graph: Graph, part: str) -> Graph:
    from archc.ir import LintError, OpProblem

    if part not in ("trunk", "head"):
        raise ArchcError(f"unknown part '{part}'", hint="parts: trunk, head")
    if "cut" not in graph.meta:
        raise ArchcError(
            f"net '{graph.name}' has no `cut`, so it has no {part}",
            hint="add `cut HxW` after the trunk's last layer (e.g. `cut 14x14` after conv4_x)",
        )
    try:
        g = graph.part(part)
    except (LintError, OpProblem) as exc:
        msg = getattr(exc, "message", str(exc))
        raise ArchcError(f"cannot take the {part} of '{graph.name}': {msg}", hint="check the `cut` size") from None
    g.lint()
    return g


def frozen_stages(graph: Graph, freeze_at: int) -> list[str]:
    """The top-level statements `freeze_at` freezes: the stem and the first `freeze_at` stages.

    A stage is a top-level block call (its layers have dotted names, e.g. layer1.0.conv1); the stem is
    every top-level statement before the first stage.

    Raises:
        ArchcError: freeze_at is negative or larger than the number of stages.
    """
    order: list[str] = []
    blocks: set[str] = set()
    for n in graph.nodes():
        if n.op == "input":
            continue
        if n.stage not in order:
            order.append(n.stage)
        if "." in n.name:
            blocks.add(n.stage)
    stages = [s for s in order if s in blocks]
    if freeze_at < 0 or freeze_at > len(stages):
        raise ArchcError(
            f"freeze_at={freeze_at}, but net '{graph.name}' has {len(stages)} stages ({', '.join(stages) or 'none'})",
            hint=f"choose 0..{len(stages)}: 0 freezes the stem, k the stem and the first k stages",
        )
    first = order.index(stages[0]) if stages else len(order)
    return order[:first] + stages[:freeze_at]


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state_dict from a `.safetensors` file or a torch file, never unpickling objects.

    A torch file is read with `weights_only=True`; a dict holding `state_dict` or `model`
    is unwrapped. An `archc train` checkpoint yields its model weights only.

    Raises:
        WeightsError: the file is missing or unreadable, or holds no state_dict.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                # a training checkpoint also holds optimizer and RNG tensors: keep the weights only
                train = meta.get("format", "").startswith("archc-train/")
                state = {k: f.get_tensor(k) for k in f.keys() if not (train and k.startswith("__train__."))}
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable checkpoint is the user's file, not our bug
        raise WeightsError(f"cannot read weights {path}: {exc}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return dict(state)


def load_weights(module: Any, weights: Any, graph: Graph | None = None) -> None:
    """Load a state_dict or checkpoint file into `module` with strict=True.

    Args:
        module: the compiled module.
        weights: a state_dict, or a path to a `.safetensors` file or a torch file
            (read with `weights_only=True`; a dict holding `state_dict` or `model` is unwrapped),
            in the unoptimised model's key space.
        graph: the module's graph; BNs its passes folded are folded into the weights.

    Raises:
        WeightsError: the file is missing or unreadable, its keys, shapes or value types do not match,
            or it holds NaN, infinite values or negative variances.
    """
    state = read_checkpoint(weights) if isinstance(weights, (str, os.PathLike)) else weights
    if not isinstance(state, Mapping):
        raise WeightsError(f"weights must be a state_dict or a checkpoint path, got {type(weights).__name__}")
    from archc.weights import check_weights, checkpoint_slots, fold_state_dict

    # checked in the spec's key space before folding: eval mode names the same keys as train mode
    check_weights(state, checkpoint_slots(module.state_dict(), graph))
    if graph is not None:
        state = fold_state_dict(graph, state)
    module.load_state_dict(state, strict=True)


def compile(
    spec: str | os.PathLike,
    *,
    backend: str = "torch",
    mode: str = "train",
    overrides: Mapping[str, Any] | None = None,
    weights: Any = None,
    frozen_bn: bool = False,
    freeze_at: int | None = None,
    part: str | None = None,
    backend_options: Mapping[str, Any] | None = None,
) -> Any:
    """Compile a spec into a trainable `torch.nn.Module`.

    Args:
        spec: a `.arch` path, a catalogue name (`resnet152`; see `list_models`), or `.arch` text.
            A file of that name wins over the catalogue.
        backend: an installed backend name ("torch" by default).
        mode: "train" (default) or "eval" (BN folded into convs, fused ops; the module
            is returned in eval mode with requires_grad off: it is for inference).
        overrides: net parameter values, like `--set key=value` (strings or values).
        weights: a state_dict or a checkpoint path, loaded with strict=True.
        frozen_bn: every BN a fixed affine (see `build`).
        freeze_at: freeze the stem and the first `freeze_at` stages (see `build`).
        part: "trunk" or "head" of a net with a `cut` (see `build`).
        backend_options: keyword options for the backend's lower() (see `build`).

    Returns:
        The module, freshly initialised unless `weights` is given.

    Raises:
        ArchcError: anything wrong with the spec, the overrides, the backend or the weights.
    """
    b = build(
        spec,
        backend=backend,
        mode=mode,
        overrides=overrides,
        frozen_bn=frozen_bn,
        freeze_at=freeze_at,
        part=part,
        backend_options=backend_options,
    )
    if weights is not None:
        load_weights(b.module, weights, b.graph)
    if mode == "eval":
        # an inference module: no autograd bookkeeping, so fused kernels take their fast path
        return b.module.eval().requires_grad_(False)
    return b.module


__all__ = ["ArchcError", "Build", "build", "compile", "load_weights", "read_checkpoint"]
