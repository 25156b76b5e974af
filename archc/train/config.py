"""The settings of an `archc train` run: recorded in every checkpoint, read back and checked on resume."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archc.errors import CheckpointError, TrainError
from archc.train.recipes import Recipe, override


@dataclass
class TrainConfig:
    """Everything `archc train` was asked to do (recorded in every checkpoint)."""

    spec: str
    recipe: Recipe
    data: str | None = None
    backend: str = "torch"
    overrides: dict[str, str] = field(default_factory=dict)
    runs: Path = Path("runs")
    name: str | None = None
    seed: int = 0
    amp: str | None = None
    device: str | None = None
    sync_bn: bool = False
    deterministic: bool = False
    workers: int | None = None
    checkpoint_every: int | None = None
    progress: bool = True
    task: str = "classify"
    init: str | None = None

    def to_meta(self) -> dict[str, Any]:
        """The JSON-able settings a resumed run restores."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["recipe"] = self.recipe.to_dict()
        d["runs"] = str(self.runs)
        return d


def config_from_meta(meta: dict[str, Any], given: TrainConfig) -> TrainConfig:
    """The settings a checkpoint was written with; only the device and the progress bar come from `given`.

    Args:
        meta: the checkpoint's header (its "config" entry is `TrainConfig.to_meta()`).
        given: the settings of the command that resumes.

    Raises:
        CheckpointError: the recorded settings are unreadable, or the given spec or --set values differ.
        TrainError: the recorded recipe is malformed.
    """
    try:
        saved = dict(meta["config"])
        recipe = _recipe_from_meta(dict(saved.pop("recipe")))
        saved["runs"] = Path(saved["runs"])
        cfg = TrainConfig(recipe=recipe, **saved)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the checkpoint's settings are unreadable ({exc})") from None
    if not all(isinstance(v, str) for v in (cfg.spec, *cfg.overrides.keys(), *cfg.overrides.values())):
        raise CheckpointError("the checkpoint's spec or --set values are malformed")
    _check_same_net(cfg, given)
    # a run started elsewhere names its spec relative to another directory: the given one is the same net
    spec = cfg.spec if Path(cfg.spec).is_file() else given.spec
    return dataclasses.replace(cfg, spec=spec, device=given.device, progress=given.progress, workers=given.workers)


def _check_same_net(saved: TrainConfig, given: TrainConfig) -> None:
    """Refuse a --resume whose SPEC (or --set values) differ from the run's: the run's would win silently.

    The spec is the same when it is the same file or has the same text; a spec the run names that no
    longer exists here cannot be compared, and the checkpoint's keys and shapes are checked on load.

    Raises:
        CheckpointError: the given spec or --set values differ from the run's.
    """
    a, b = Path(saved.spec), Path(given.spec)
    with contextlib.suppress(OSError):
        if a.is_file() and not os.path.samefile(a, b) and a.read_bytes() != b.read_bytes():
            raise CheckpointError(
                f"the run was started with the spec {a}, not {b}",
                hint=f"resume with the run's spec: archc train {a} --resume RUN_DIR",
            )
    if given.overrides and given.overrides != saved.overrides:
        shown = " ".join(f"--set {k}={v}" for k, v in sorted(saved.overrides.items()))
        hint = f"give the run's values ({shown}) or no --set at all" if shown else "resume without --set (it had none)"
        raise CheckpointError("the run was started with other --set values than these", hint=hint)


def _recipe_from_meta(rd: dict[str, Any]) -> Any:
    """The Recipe a checkpoint recorded, parsed and checked like a recipe file (a field of another type fails).

    Raises:
        TrainError: a field of the wrong kind or value.
    """
    name, extra = str(rd.pop("name", "cifar")), rd.pop("extra", {})
    if not isinstance(extra, dict):
        raise TrainError("the checkpoint's recipe: 'extra' is not an object")
    origin = "the checkpoint's recipe"
    try:
        r = override(Recipe(name=name, extra=dict(extra)), rd, origin=origin)
    except TypeError as exc:  # e.g. milestones that are no list
        raise TrainError(f"{origin} is malformed ({exc})", hint="use the run's other checkpoint") from None
    for f in dataclasses.fields(Recipe):
        value, kind = getattr(r, f.name), str(f.type)
        if value is None and "None" in kind:
            continue
        want = next(t for t in (bool, tuple, dict, float, int, str) if t.__name__ in kind)
        ok = isinstance(value, (int, float) if want is float else want) and not (
            isinstance(value, bool) and want is not bool
        )
        if not ok or (want is float and not math.isfinite(value)):
            raise TrainError(f"{origin}: field '{f.name}' holds {value!r}", hint="use the run's other checkpoint")
    return r
