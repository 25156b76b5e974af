"""Training checkpoints: one safetensors file, written atomically, read without unpickling anything.

The file holds the model's weights under their own keys (so it is directly a `--weights` file), the
optimizer's tensors and the RNG states under the reserved prefix `__train__.`, and everything else
(optimizer hyperparameters, schedule, python/numpy RNG, run metadata) as JSON in the safetensors header.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archc.errors import CheckpointError
from archc.files import atomic_write, save_safetensors  # noqa: F401 - atomic_write is re-exported

FORMAT = "archc-train/1"
PREFIX = "__train__."


@dataclass
class TrainState:
    """Everything a resumed run needs.

    Attributes:
        model: the model's state_dict (spec key space).
        optimizer: a torch optimizer state_dict (state + param_groups).
        scheduler: the schedule's JSON-able state.
        rng: from capture_rng().
        meta: JSON-able run metadata (iteration, best metric, settings).
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    meta: dict[str, Any]


def capture_rng() -> dict[str, Any]:
    """Snapshot every global random generator a training run draws from.

    Returns:
        {"python": [...], "numpy": [...]} as JSON-able lists, "torch": the CPU generator's state tensor,
        and "cuda": a list of per-device state tensors when CUDA is available.
    """
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(rng: dict[str, Any]) -> None:
    """Put every global random generator back to a capture_rng() snapshot.

    CUDA states are restored for the devices this process has (a checkpoint from a bigger machine keeps
    going on a smaller one); a snapshot without CUDA states leaves the CUDA generators alone.

    Args:
        rng: what capture_rng() returned, possibly after a JSON round trip of its non-tensor parts.

    Raises:
        CheckpointError: a part is missing or malformed.
    """
    try:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(rng["torch"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"the random generator states are malformed ({exc})", hint="resume from a checkpoint written by archc train"
        ) from None
    if rng.get("cuda") and torch.cuda.is_available():
        for device, state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)


def _own_storage(t: torch.Tensor, seen: set[int]) -> torch.Tensor:
    """A CPU, contiguous tensor that shares memory with no other tensor in the file.

    safetensors refuses tensors that share storage (tied weights, views of one buffer); those are copied,
    everything else is written without a copy.
    """
    t = t.detach().cpu().contiguous()
    storage = t.untyped_storage()
    ptr = storage.data_ptr()
    if ptr in seen or storage.nbytes() != t.numel() * t.element_size():
        t = t.clone()
        ptr = t.untyped_storage().data_ptr()
    seen.add(ptr)
    return t


def _split_optimizer(opt: dict[str, Any], put: Callable[[str, torch.Tensor], None]) -> dict[str, Any]:
    """Hand the optimizer state's tensors to `put`; return the JSON-able rest."""
    state_json: dict[str, dict[str, Any]] = {}
    for pid, entries in opt["state"].items():
        state_json[str(pid)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                key = f"{PREFIX}optim.state.{pid}.{name}"
                put(key, value)
                state_json[str(pid)][name] = {"tensor": key}
            else:
                state_json[str(pid)][name] = {"value": value}
    return {"state": state_json, "param_groups": opt["param_groups"]}


def _json(what: str, value: Any) -> str:
    """JSON text for the header; a value JSON cannot hold is the caller's bug, named here."""
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot save the checkpoint's {what}: {exc}",
            hint=f"keep the {what} to JSON types (str, numbers, lists, dicts)",
        ) from None


def save_checkpoint(path: Path, state: TrainState) -> None:
    """Write `state` to one .safetensors file, atomically.

    Layout: the model's weights under their own keys (the file is a `--weights` file as it is), the
    optimizer's tensors under `__train__.optim.state.<param>.<name>`, the RNG tensors under
    `__train__.rng.torch` / `__train__.rng.cuda.<device>`, and in the header (str -> str) the marker
    `format: archc-train/1` plus JSON for the optimizer's param_groups and scalar state, the schedule, the
    python/numpy RNG states and the run metadata.

    Args:
        path: the file to write (typically RUN/last.safetensors or RUN/best.safetensors).
        state: what to save.

    Raises:
        CheckpointError: a model key uses the reserved prefix, or a non-tensor part is not JSON-able.
        OutputError: the file cannot be written (no permission, disk full); the old file stays.
    """
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def put(key: str, value: torch.Tensor) -> None:
        tensors[key] = _own_storage(value, seen)

    for k, v in state.model.items():
        if k.startswith(PREFIX):
            raise CheckpointError(
                f"model key '{k}' uses the prefix {PREFIX!r} reserved for training state",
                hint="rename the layer in the spec",
            )
        put(k, v)
    optim = _split_optimizer(state.optimizer, put)
    rng = dict(state.rng)
    put(f"{PREFIX}rng.torch", rng.pop("torch"))
    for i, t in enumerate(rng.pop("cuda", None) or []):
        put(f"{PREFIX}rng.cuda.{i}", t)
    metadata = {
        "format": FORMAT,
        "optimizer": _json("optimizer state", optim),
        "scheduler": _json("schedule state", state.scheduler),
        "rng": _json("random generator states", rng),
        "meta": _json("run metadata", state.meta),
    }
    save_safetensors(Path(path), tensors, metadata, what="checkpoint")


def is_train_checkpoint(metadata: dict[str, str] | None) -> bool:
    """Whether a safetensors header belongs to an archc training checkpoint (of any format version).

    Args:
        metadata: the header's metadata, as safetensors' `metadata()` returns it.

    Returns:
        True when it carries the `archc-train/` format marker.
    """
    return bool(metadata) and str(metadata.get("format", "")).startswith("archc-train/")


def read_meta(path: Path) -> dict[str, Any] | None:
    """The run metadata of an `archc train` checkpoint from its header alone (no tensor is read).

    Returns:
        The `meta` dict, or None for anything that is not a readable training checkpoint.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return json.loads(metadata["meta"]) if is_train_checkpoint(metadata) else None
    except Exception:  # a plain weights file, a torch file, a torn file: no training metadata
        return None


def load_checkpoint(path: Path) -> TrainState:
    """Read a checkpoint written by save_checkpoint (safetensors and JSON only, nothing unpickled).

    Args:
        path: the .safetensors file.

    Returns:
        The saved state; tensors are on the CPU (optimizer.load_state_dict moves them to the parameters).

    Raises:
        CheckpointError: the file is missing, unreadable, truncated, a plain weights file, from another
            format version, or has missing/malformed parts.
    """
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint", hint=f"give {path / 'last.safetensors'}")
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}", hint="give a run directory's last.safetensors or best.safetensors"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # a torn or foreign file is the user's to replace, not a crash
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc}",
            hint="the file is not a .safetensors file or was cut short; use the run's other checkpoint",
        ) from None
    if not is_train_checkpoint(metadata):
        raise CheckpointError(
            f"{path} is a weights file, not an archc training checkpoint (no '{FORMAT}' marker)",
            hint="--resume needs a run directory written by archc train; use --weights/--init for plain weights",
        )
    if metadata["format"] != FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {metadata['format']!r}; this archc reads {FORMAT!r}",
            hint="resume it with the archc version that wrote it (its weights still load with --weights)",
        )
    try:
        return _unpack(metadata, tensors)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is incomplete ({exc!r} missing or malformed)",
            hint="it was not written by archc train's save_checkpoint; use the run's other checkpoint",
        ) from None


def _unpack(metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> TrainState:
    """Reassemble a TrainState from a checkpoint's header and tensors (KeyError/ValueError when malformed)."""
    optim = json.loads(metadata["optimizer"])
    state: dict[int, dict[str, Any]] = {}
    for pid, entries in optim["state"].items():
        state[int(pid)] = {name: tensors[e["tensor"]] if "tensor" in e else e["value"] for name, e in entries.items()}
    rng = json.loads(metadata["rng"])
    rng["torch"] = tensors[f"{PREFIX}rng.torch"]
    cuda = sorted((k for k in tensors if k.startswith(f"{PREFIX}rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda:
        rng["cuda"] = [tensors[k] for k in cuda]
    return TrainState(
        model={k: v for k, v in tensors.items() if not k.startswith(PREFIX)},
        optimizer={"state": state, "param_groups": optim["param_groups"]},
        scheduler=json.loads(metadata["scheduler"]),
        rng=rng,
        meta=json.loads(metadata["meta"]),
    )
