"""The task registry: `TrainConfig.task` names a "module:Class" the loop imports on demand."""

from __future__ import annotations

import sys
import types

import pytest

from archc.errors import TrainError
from archc.train import tasks


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_every_registered_task_builds_and_makes_itself(name: str) -> None:
    cls = tasks.task_class(name)
    assert cls.__name__ == tasks.TASKS[name].rpartition(":")[2]
    assert callable(cls.build_model) and callable(cls.from_config)


def test_unknown_task_names_the_registered_ones() -> None:
    with pytest.raises(TrainError) as exc:
        tasks.task_class("segment")
    assert "unknown task 'segment'" in str(exc.value)
    assert exc.value.hint == "tasks: " + ", ".join(tasks.TASKS)


def test_a_registered_task_is_imported_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("archc_test_task_module")

    class Echo:
        pass

    module.Echo = Echo  # type: ignore[attr-defined]
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    tasks.register("echo", "archc_test_task_module:Echo")
    with pytest.raises(ModuleNotFoundError):
        tasks.task_class("echo")  # the module does not exist yet: the name is resolved on demand
    monkeypatch.setitem(sys.modules, "archc_test_task_module", module)
    assert tasks.task_class("echo") is Echo
    with pytest.raises(ValueError, match="module:Class"):
        tasks.register("bad", "archc_test_task_module.Echo")
