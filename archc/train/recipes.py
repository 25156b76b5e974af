"""Training recipes: the paper's presets (Sec 3.4, Sec 4.2), overrides, and iteration scaling.

A recipe is plain data. Its schedule is written in iterations as in the paper; `scaled(iters)` shrinks or
stretches every iteration count by the same factor so that a short run keeps the schedule's shape
(`--iters 6400` on the CIFAR recipe divides at 3200 and 4800).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from archc.data.augment import Augment
from archc.errors import TrainError, did_you_mean

MIN_EVAL_EVERY = 25  # iterations; the shortest test interval `scaled` makes (an explicit eval_every may be less)


@dataclass(frozen=True)
class Recipe(Augment):
    """One training recipe.

    Attributes:
        name: the preset it started from.
        lr, momentum, weight_decay, nesterov: SGD settings.
        batch_size: the global mini-batch (split across processes).
        iters: total iterations.
        schedule: "step" (divide by 1/gamma at `milestones`) or "plateau" (divide when the test error has
            not improved by `plateau_threshold` for `plateau_patience` evaluations).
        warmup_lr: for nets at least `warmup_depth` layers deep, train at this lr until the training error
            is below `warmup_error`, then switch to `lr` (Sec 4.2, ResNet-110); None: no warm-up.
        eval_every: iterations between test-set evaluations (and checkpoints).
        log_every: iterations between training-metric records.
        pad_crop, flip, scale, pca_std, mean, test_crop, resize_to: data augmentation (inherited from
            archc.data.augment.Augment).
        extra: settings for other consumers (kept with the recipe in checkpoints).
    """

    name: str = "cifar"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    batch_size: int = 128
    iters: int = 64000
    schedule: str = "step"
    milestones: tuple[int, ...] = (32000, 48000)
    gamma: float = 0.1
    plateau_patience: int = 3
    plateau_threshold: float = 0.001
    max_drops: int = 3
    warmup_lr: float | None = None
    warmup_error: float = 0.8
    warmup_depth: int = 110
    eval_every: int = 2000
    log_every: int = 100
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def scaled(self, iters: int) -> Recipe:
        """The same recipe over `iters` iterations: milestones and intervals scale by iters/self.iters.

        Raises:
            TrainError: iters is not positive.
        """
        if iters <= 0:
            raise TrainError(f"--iters must be positive, got {iters}")
        if iters == self.iters:
            return self
        f = iters / self.iters
        # a floor on the scaled test interval: `--iters 20` of the CIFAR recipe would otherwise test after
        # every iteration; a run shorter than the floor tests once, at its end
        floor = min(self.eval_every, MIN_EVAL_EVERY)
        eval_every = min(iters, max(floor, round(self.eval_every * f)))
        return dataclasses.replace(
            self,
            iters=iters,
            milestones=tuple(max(1, round(m * f)) for m in self.milestones),
            eval_every=eval_every,
            # a record per eval interval at most: short runs still log a useful curve
            log_every=max(1, min(self.log_every, eval_every)),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (recorded in checkpoints and run directories)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["extra"] = {str(k): str(v) for k, v in self.extra.items()}
        return json.loads(json.dumps(d))


# Sec 4.2: "weight decay of 0.0001 and momentum of 0.9 ... mini-batch size of 128 ... learning rate of 0.1,
# divide it by 10 at 32k and 48k iterations, and terminate training at 64k iterations ... 4 pixels are
# padded on each side, and a 32x32 crop is randomly sampled from the padded image or its horizontal flip"
# and, for 110 layers, "0.01 to warm up the training until the training error is below 80%".
CIFAR = Recipe(name="cifar", pad_crop=4, flip=True, warmup_lr=0.01, eval_every=2000, log_every=100)

# Sec 3.4: "shorter side randomly sampled in [256, 480] ... 224x224 crop ... horizontal flip ... per-pixel
# mean subtracted ... standard color augmentation ... mini-batch size of 256 ... learning rate starts from
# 0.1 and is divided by 10 when the error plateaus ... up to 60x10^4 iterations ... weight decay of 0.0001
# and a momentum of 0.9"; testing: "the standard 10-crop testing".
IMAGENET = Recipe(
    name="imagenet",
    batch_size=256,
    iters=600_000,
    schedule="plateau",
    milestones=(),
    eval_every=10_000,
    log_every=100,
    flip=True,
    scale=(256, 480),
    pca_std=0.1,
    test_crop="ten",
    resize_to=256,
)

PRESETS: dict[str, Recipe] = {"cifar": CIFAR, "imagenet": IMAGENET}

_BOOL = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _coerce(key: str, value: Any, current: Any, origin: str) -> Any:
    """Turn a CLI string or a recipe-file value into the field's type."""
    ftype = {f.name: f.type for f in fields(Recipe)}[key]
    try:
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in ("none", "null") and ("None" in str(ftype)):
                return None
            if "tuple" in str(ftype):
                parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
                return tuple(int(float(p)) for p in parts)
            if "bool" in str(ftype):
                return _BOOL[text.lower()]
            if "float" in str(ftype):
                return float(text)
            if "int" in str(ftype):
                return int(float(text)) if float(text).is_integer() else int(text)
            return text
        if "tuple" in str(ftype) and isinstance(value, (list, tuple)):
            return tuple(int(v) for v in value)
        if "float" in str(ftype) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if "int" not in str(ftype) else value
        return value
    except (ValueError, KeyError):
        raise TrainError(
            f"{origin}: bad value {value!r} for recipe field '{key}' (currently {current!r})",
            hint="give a value of the same kind as the current one",
        ) from None


def _check(r: Recipe, origin: str) -> Recipe:
    problems = []
    if r.schedule not in ("step", "plateau"):
        problems.append(f"schedule must be 'step' or 'plateau', not {r.schedule!r}")
    if r.batch_size <= 0 or r.iters <= 0 or r.lr <= 0:
        problems.append("batch_size, iters and lr must be positive")
    if any(b < a for a, b in zip(r.milestones, r.milestones[1:], strict=False)):
        problems.append(f"milestones must not decrease: {r.milestones}")
    if r.mean not in ("pixel", "none"):
        problems.append(f"mean must be 'pixel' or 'none', not {r.mean!r}")
    if r.test_crop not in ("center", "ten"):
        problems.append(f"test_crop must be 'center' or 'ten', not {r.test_crop!r}")
    if r.scale is not None and (len(r.scale) != 2 or r.scale[0] > r.scale[1]):
        problems.append(f"scale must be two sizes low,high, not {r.scale!r}")
    if problems:
        raise TrainError(f"{origin}: " + "; ".join(problems), hint="fix the recipe values")
    return r


def override(recipe: Recipe, values: dict[str, Any], origin: str = "--hp") -> Recipe:
    """Return `recipe` with some fields replaced (strings are parsed to the field's type).

    Raises:
        TrainError: an unknown field or a value of the wrong kind.
    """
    names = {f.name for f in fields(Recipe)} - {"extra", "name"}
    changes = {}
    for key, value in values.items():
        if key not in names:
            close = did_you_mean(key, names)
            raise TrainError(
                f"{origin}: unknown recipe field '{key}'",
                hint=(f"{close} " if close else "") + f"fields: {', '.join(sorted(names))}",
            )
        changes[key] = _coerce(key, value, getattr(recipe, key), origin)
    return _check(dataclasses.replace(recipe, **changes), origin)


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """A preset by name, or a TOML/JSON recipe file (`base = "cifar"` plus fields to change).

    Raises:
        TrainError: an unknown preset, an unreadable file, or bad fields.
    """
    key = os.fspath(name_or_path)
    if key in PRESETS:
        return PRESETS[key]
    path = Path(key)
    if not path.suffix:
        raise TrainError(
            f"unknown recipe '{key}'",
            hint=f"presets: {', '.join(PRESETS)}; or give a .toml/.json recipe file",
        )
    if not path.is_file():
        raise TrainError(f"recipe file not found: {path}", hint=f"presets: {', '.join(PRESETS)}")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise TrainError(f"cannot read recipe {path}: {exc}") from None
    if not isinstance(data, dict):
        raise TrainError(f"recipe {path} must hold a table of fields")
    base_name = data.pop("base", "cifar")
    if base_name not in PRESETS:
        raise TrainError(f"{path}: unknown base recipe '{base_name}'", hint=f"presets: {', '.join(PRESETS)}")
    r = override(PRESETS[base_name], data, origin=str(path))
    return dataclasses.replace(r, name=f"{base_name}+{path.name}")


def default_recipe(input_shape: tuple[int, ...]) -> Recipe:
    """The preset for a net's input: `cifar` for small (<= 64 px) inputs, `imagenet` otherwise."""
    return CIFAR if max(input_shape[1:]) <= 64 else IMAGENET
