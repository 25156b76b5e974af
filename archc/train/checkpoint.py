"""Training checkpoints: one safetensors file, written atomically, read without unpickling anything.

The file holds the model's weights under their own keys (so it is directly a `--weights` file), the
optimizer's tensors and the RNG states under the reserved prefix `__train__.`, and everything else
(optimizer hyperparameters, schedule, python/numpy RNG, run metadata) as JSON in the safetensors header.
"""

from __future__ import annotations

import json
import os
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archc.errors import CheckpointError

FORMAT = "archc-train/1"
PREFIX = "__train__."


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write a file so that a crash leaves the old file or the new one, never a torn one.

    `write(tmp)` fills a temp file in the same directory (so the rename cannot cross file systems); the
    temp file is fsynced, renamed onto `path`, and the directory is fsynced so the rename itself survives
    a power loss. On any error the temp file is removed and `path` is left as it was.

    Args:
        path: the file to (re)place; its directory is created if needed.
        write: fills the temp file it is given.

    Raises:
        Exception: whatever `write` or the file system raised; `path` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _claim_temp(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _claim_temp(path: Path) -> Path:
    """Create an empty, unused `.NAME.XXXX.tmp` beside `path`.

    Unlike tempfile.mkstemp (always 0600) the file gets the permissions a plain open() would give, so the
    checkpoint is as readable as any other file the run writes.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    """The states of python's `random`, numpy's global generator and torch's CPU (and CUDA) generators."""
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
    """Restore what capture_rng() returned."""
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _split_optimizer(opt: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Move the optimizer state's tensors into `tensors`; return the JSON-able rest."""
    state_json: dict[str, dict[str, Any]] = {}
    for pid, entries in opt["state"].items():
        state_json[str(pid)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                key = f"{PREFIX}optim.{pid}.{name}"
                tensors[key] = value.detach().cpu().contiguous()
                state_json[str(pid)][name] = {"tensor": key}
            else:
                state_json[str(pid)][name] = {"value": value}
    return {"state": state_json, "param_groups": opt["param_groups"]}


def save_checkpoint(path: Path, state: TrainState) -> None:
    """Write `state` to one .safetensors file atomically (see the module docstring for the layout)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for k, v in state.model.items():
        if k.startswith(PREFIX):
            raise CheckpointError(f"model key '{k}' uses the reserved prefix {PREFIX!r}")
        tensors[k] = v.detach().cpu().contiguous()
    optim = _split_optimizer(state.optimizer, tensors)
    rng = dict(state.rng)
    tensors[f"{PREFIX}rng.torch"] = rng.pop("torch")
    for i, t in enumerate(rng.pop("cuda", [])):
        tensors[f"{PREFIX}rng.cuda.{i}"] = t
    metadata = {
        "format": FORMAT,
        "optimizer": json.dumps(optim),
        "scheduler": json.dumps(state.scheduler),
        "rng": json.dumps(rng),
        "meta": json.dumps(state.meta),
    }
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def is_train_checkpoint(metadata: dict[str, str] | None) -> bool:
    """Whether a safetensors header belongs to an archc training checkpoint."""
    return bool(metadata) and metadata.get("format", "").startswith("archc-train/")


def load_checkpoint(path: Path) -> TrainState:
    """Read a checkpoint written by save_checkpoint (safetensors and JSON only, nothing unpickled).

    Raises:
        CheckpointError: the file is missing, unreadable, or not an archc training checkpoint.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", hint="give a run directory or its last.safetensors")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # a torn or foreign file is the user's to replace, not a crash
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}", hint="is it a .safetensors file?") from None
    if not is_train_checkpoint(metadata):
        raise CheckpointError(
            f"{path} is a weights file, not an archc training checkpoint",
            hint="--resume needs a run directory written by archc train; use --weights for plain weights",
        )
    try:
        optim = json.loads(metadata["optimizer"])
        state: dict[int, dict[str, Any]] = {}
        for pid, entries in optim["state"].items():
            state[int(pid)] = {
                name: tensors[e["tensor"]] if "tensor" in e else e["value"] for name, e in entries.items()
            }
        rng = json.loads(metadata["rng"])
        rng["torch"] = tensors[f"{PREFIX}rng.torch"]
        cuda = sorted(
            (k for k in tensors if k.startswith(f"{PREFIX}rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1])
        )
        if cuda:
            rng["cuda"] = [tensors[k] for k in cuda]
        return TrainState(
            model={k: v for k, v in tensors.items() if not k.startswith(PREFIX)},
            optimizer={"state": state, "param_groups": optim["param_groups"]},
            scheduler=json.loads(metadata["scheduler"]),
            rng=rng,
            meta=json.loads(metadata["meta"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} is incomplete ({exc!r} missing or malformed)") from None
