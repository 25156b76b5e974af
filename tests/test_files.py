"""archc.files: atomic output writes, the umask's mode, and every OSError as a located OutputError."""

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

from archc.errors import OutputError
from archc.files import make_dir, remove_temps, save_safetensors, write_output


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_output_is_atomic_and_leaves_no_temp_on_error(tmp_path):
    out = tmp_path / "sub" / "a.txt"
    assert write_output(out, lambda t: t.write_text("old")) == out
    assert out.read_text() == "old" and stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()

    def fill_then_fail(t: Path) -> None:
        t.write_text("partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputError) as e:
        write_output(out, fill_then_fail, "report")
    assert f"cannot write report {out}: No space left on device" in str(e.value)
    assert "disk is full" in e.value.hint
    assert out.read_text() == "old" and [p.name for p in out.parent.iterdir()] == ["a.txt"]


def test_safetensors_get_the_umask_mode_not_0600(tmp_path):
    # safetensors' save_file writes 0600 through its own temp file; archc's files are as readable as the rest
    path = save_safetensors(tmp_path / "w.safetensors", {"w": torch.ones(3)}, {"k": "v"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"k": "v"} and torch.equal(f.get_tensor("w"), torch.ones(3))


def test_a_full_device_is_written_in_place_never_replaced(tmp_path):
    # /dev/full fails every write with ENOSPC; renaming a temp file onto it (as safetensors' own save_file
    # does) would replace the device node by a regular file, so non-regular targets are written in place
    full = Path("/dev/full")
    if not full.is_char_device():
        pytest.skip("no /dev/full character device here")
    for write in (
        lambda: write_output(full, lambda t: t.write_text("x" * 10_000), "graph"),
        lambda: save_safetensors(full, {"w": torch.ones(3)}),
    ):
        with pytest.raises(OutputError, match="cannot write .*/dev/full: No space left on device"):
            write()
        assert full.is_char_device()


def test_a_file_in_the_way_is_a_located_error(tmp_path):
    # tests run as root, where chmod does not stop writes: a path under a regular file fails for root too
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError) as e:
        write_output(blocker / "out.txt", lambda t: t.write_text("x"))
    # mkdir of the parent finds the file (EEXIST); where the parent is not created, open gives ENOTDIR
    assert "File exists" in str(e.value) or "Not a directory" in str(e.value)
    assert "a file" in e.value.hint and str(blocker / "out.txt") in str(e.value)
    with pytest.raises(OutputError, match="cannot write output directory"):
        make_dir(blocker / "dir")
    with pytest.raises(OutputError, match="Is a directory|File exists|Directory not empty"):
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "x").write_text("")
        write_output(tmp_path / "d", lambda t: t.write_text("x"))
    assert blocker.read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["d", "file"]


def test_a_refused_permission_is_a_located_error(tmp_path, monkeypatch):
    # as root a 0500 directory is still writable, so the refusal the kernel would give a user is simulated
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(args[0]))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(OutputError) as e:
        write_output(tmp_path / "x.txt", lambda t: t.write_text("x"))
    assert "Permission denied" in str(e.value) and "no permission" in e.value.hint


def test_remove_temps_deletes_only_atomic_write_temps(tmp_path):
    for name in (".last.safetensors.0a1b2c3d.tmp", ".metrics.jsonl.ffffffff.tmp", "keep.tmp", ".lock", "x.txt"):
        (tmp_path / name).write_text("")
    removed = remove_temps(tmp_path)
    assert sorted(p.name for p in removed) == [".last.safetensors.0a1b2c3d.tmp", ".metrics.jsonl.ffffffff.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "keep.tmp", "x.txt"]
