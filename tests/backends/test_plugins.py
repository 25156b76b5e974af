"""Backend discovery through the `archc.backends` entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import archc
from archc.backend import available, get_backend
from archc.errors import BackendError

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = '''
class EchoBackend:
    """A third-party backend: lowers through the torch backend and tags the module."""

    name = "echo"

    def source(self, graph, origin="a spec"):
        return "# echo\\n"

    def lower(self, graph, origin="a spec", **options):
        from importlib.metadata import entry_points

        (ep,) = [e for e in entry_points(group="archc.backends") if e.name == "torch"]
        module = ep.load()().lower(graph, origin=origin)
        module.lowered_by = "echo"
        return module
'''


def test_torch_backend_is_registered() -> None:
    eps = available()
    assert "torch" in eps
    assert eps["torch"].value == "archc_torch:TorchBackend"
    assert get_backend("torch").name == "torch"


def test_unknown_backend_names_the_installed_ones() -> None:
    with pytest.raises(BackendError, match="unknown backend 'torhc'") as e:
        get_backend("torhc")
    assert "did you mean 'torch'" in (e.value.hint or "")


def test_core_never_imports_a_backend_by_name() -> None:
    for path in (ROOT / "archc").rglob("*.py"):
        assert "archc_torch" not in path.read_text(), path


def test_third_party_backend_via_dist_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "echo_backend.py").write_text(PLUGIN)
    info = tmp_path / "echo_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[archc.backends]\necho = echo_backend:EchoBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "echo" in available()
    module = archc.compile(str(ROOT / "specs/cifar/resnet20.arch"), backend="echo")
    assert module.lowered_by == "echo"


def test_a_broken_plugin_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[archc.backends]\nbroken = no_such_module:Backend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BackendError, match="failed to load"):
        get_backend("broken")


def test_import_archc_does_not_load_torch() -> None:
    code = (
        "import sys, archc; assert 'torch' not in sys.modules\n"
        "b = archc.build('specs/resnet18.arch', lower=False)\n"
        "assert b.graph.params() == 11689512 and 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
