"""Every command's writes (-o, --runs, --init) fail as exit 2 with the path named, never with a traceback.

Tests run as root, where a chmod 0500 directory does not stop writes; "read-only" is tested by a path under
a regular file (the kernel refuses it for root too) and by a simulated EACCES, "disk full" by /dev/full and
by a simulated ENOSPC at the rename that ends every atomic write.
"""

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
R20 = str(ROOT / "specs/cifar/resnet20.arch")
TRAIN = ["--data", "synthetic:32", "--iters", "2", "--batch-size", "16", "--no-progress", "--set", "num_classes=10"]


def _fails(args: list[str], *messages: str) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for m in messages:
        assert m in r.output, r.output
    return r.output


def _blocker(tmp_path: Path) -> Path:
    f = tmp_path / "a-file"
    f.write_text("")
    return f


def _no_space(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_build_out_under_a_file(tmp_path):
    blocker = _blocker(tmp_path)
    _fails(["build", R20, "-o", blocker / "out", "--init"], "cannot write output directory", "hint:")
    assert _files(tmp_path) == ["a-file"]


def test_build_out_on_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    _no_space(monkeypatch)
    _fails(["build", R20, "-o", tmp_path / "out", "--init"], "No space left on device", "disk is full")
    assert _files(tmp_path) == ["out"]


def test_build_out_without_permission(tmp_path, monkeypatch):
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    _fails(["build", R20, "-o", tmp_path / "out"], "Permission denied", "no permission")


def test_build_init_weights_get_the_same_mode_as_the_other_files(tmp_path):
    r = CliRunner().invoke(main, ["build", R20, "-o", str(tmp_path), "--init"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    modes = {p.suffix: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert set(modes) == {".json", ".py", ".safetensors"} and len(set(modes.values())) == 1, modes


def test_graph_to_dev_full(tmp_path):
    if not Path("/dev/full").is_char_device():
        pytest.skip("no /dev/full character device here")
    link = tmp_path / "g.dot"  # the suffix picks the format; the link leads to the full device
    link.symlink_to("/dev/full")
    _fails(["graph", R20, "-o", link, "--depth", "stage"], f"cannot write graph {link}: No space left on device")
    assert Path("/dev/full").is_char_device() and _files(tmp_path) == ["g.dot"]


def test_graph_and_export_under_a_file(tmp_path):
    blocker = _blocker(tmp_path)
    _fails(["graph", R20, "-o", blocker / "g.dot"], f"cannot write graph {blocker / 'g.dot'}")
    _fails(["export", R20, "-o", blocker / "net.py", "--no-check"], "cannot write output directory")
    assert _files(tmp_path) == ["a-file"]


def test_export_on_a_full_disk(tmp_path, monkeypatch):
    _no_space(monkeypatch)
    _fails(["export", R20, "-o", tmp_path / "net.py", "--no-check"], "cannot write Python file", "disk is full")
    assert _files(tmp_path) == []


def test_plot_under_a_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    recs = [{"iter": 1, "split": "train", "error": 0.5}, {"iter": 1, "split": "test", "error": 0.4}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    blocker = _blocker(tmp_path)
    _fails(["plot", str(run), "-o", blocker / "x.png"], f"cannot write figure {blocker / 'x.png'}")


def test_train_runs_under_a_file(tmp_path):
    blocker = _blocker(tmp_path)
    _fails(["train", R20, *TRAIN, "--runs", blocker / "runs"], "cannot write runs directory")
    assert _files(tmp_path) == ["a-file"]


def test_train_checkpoint_on_a_full_disk(tmp_path, monkeypatch):
    _no_space(monkeypatch)
    _fails(["train", R20, *TRAIN, "--runs", tmp_path, "--name", "r"], "cannot write checkpoint", "disk is full")
    # the run directory keeps its log and lock; no checkpoint and no temp file is left
    assert _files(tmp_path) == ["r-0001", "r-0001/.lock", "r-0001/metrics.jsonl"]
