"""The training tasks by name (`TrainConfig.task`): each a "module:Class" string, imported when a run asks for it.

The training loop imports no task module by name: archc.detect builds on archc.train (its recipes, process
group, `TrainConfig`), so the loop naming archc.detect would point a dependency back up. A task class
provides two class methods:

    build_model(cfg, fresh) -> (graph, module)   # `fresh`: no checkpoint is resumed (apply `cfg.init`)
    from_config(cfg, graph, recipe, info) -> task  # batches, step, evaluate, select, epoch_iters, data
"""

from __future__ import annotations

import importlib
from typing import Any

from archc.errors import TrainError

TASKS: dict[str, str] = {
    "classify": "archc.train.classify:ClassifyTask",
    "detect": "archc.detect.task:DetectTask",
}


def register(name: str, target: str) -> None:
    """Make `name` a task `archc train` can run.

    Args:
        name: the task's name (`TrainConfig.task`).
        target: "package.module:Class", imported on first use.
    """
    if ":" not in target:
        raise ValueError(f"task target must be 'module:Class', got {target!r}")
    TASKS[name] = target


def task_class(name: str) -> Any:
    """The class that runs task `name`, its module imported now.

    Raises:
        TrainError: no task of that name is registered.
    """
    target = TASKS.get(name)
    if target is None:
        raise TrainError(f"unknown task {name!r}", hint=f"tasks: {', '.join(TASKS)}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
