"""Hostile specs: files that are no spec, and bombs that pass every per-dimension check.

Each hostile file is made here, in tmp_path. `use` and the top-level spec path accept only
regular, bounded `.arch` files and never quote a refused file; nets past the parameter or
activation limit, and spec files past the size limit, are refused before anything is
allocated. The CLI cases run `python -m archc` in a child process, with a timeout (a FIFO
must not hang it) and its peak RSS read from wait4.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import archc
from archc.errors import ArchcError, LimitError, UseError
from archc.frontend import elaborate, load
from archc.frontend.limits import DEFAULT_ACTIVATION_BYTES, DEFAULT_PARAMS, DEFAULT_SPEC_BYTES

ROOT = Path(__file__).resolve().parents[2]
NET = "net t {\n  input 3x8x8\n  conv(3x3, 4)\n}\n"
SECRET = "ARCHC_TEST_SECRET_hunter2"
GIB = 1 << 30

posix_only = pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4 (POSIX)")


# The CLI runs as a grandchild of this process: Linux counts a child's peak RSS from the parent's RSS at
# fork (measured: the same `archc build` read 242 MiB from a small pytest and 1,547 MiB from one holding
# 1.5 GiB), so a small Python in between forks it and reports its own child's figure.
_WRAPPER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, int]:
    """Run `python -m archc ARGS` in a fresh process: (exit status, stdout+stderr, peak RSS in bytes).

    The process group is killed after `timeout` seconds (exit status -9 then).
    """
    rss_file = cwd.parent / f".rss-{os.getpid()}-{threading.get_ident()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, str(rss_file), sys.executable, "-m", "archc", *args],
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the timer kills the CLI with its wrapper
    )
    timer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
    timer.start()
    try:
        out = proc.stdout.read().decode("utf-8", "replace")  # type: ignore[union-attr]
        proc.wait()
    finally:
        timer.cancel()
        proc.stdout.close()  # type: ignore[union-attr]
    kib = int(rss_file.read_text()) if rss_file.exists() else 0
    rss_file.unlink(missing_ok=True)
    return proc.returncode, out, kib * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


def assert_refused(code: int, out: str, *words: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out, out
    for word in words:
        assert word in out, out


def api_error(spec: str | os.PathLike, exc: type[ArchcError] = ArchcError) -> ArchcError:
    with pytest.raises(ArchcError) as info:
        elaborate(load(spec))
    assert isinstance(info.value, exc), info.value.render()
    assert info.value.render()
    return info.value


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # so that messages name files as the tests write them


def use_spec(tmp_path: Path, target: str) -> Path:
    """main.arch in tmp_path (the working directory), which `use`s `target`; its relative path."""
    (tmp_path / "main.arch").write_text(f'use "{target}"\n{NET}')
    return Path("main.arch")


# --- item 2: `use` and the spec path read only regular, bounded .arch files ----------------


def test_use_of_a_file_that_is_no_spec_is_refused_without_quoting_it(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0:SECRET-LINE:/root:/bin/sh\n")
    err = api_error(use_spec(tmp_path, "passwd"), UseError)
    assert err.message == "cannot read 'passwd': it is not a .arch file"
    assert err.loc is not None and (err.loc.line, err.loc.col) == (1, 5)
    assert "SECRET-LINE" not in err.render()


def test_use_of_a_link_to_a_file_that_is_no_spec_is_refused(tmp_path: Path) -> None:
    (tmp_path / "environ").write_text(f"{SECRET}=1\0HOME=/root\0")
    (tmp_path / "env.arch").symlink_to(tmp_path / "environ")
    err = api_error(use_spec(tmp_path, "env.arch"), UseError)
    assert err.message == "cannot read 'env.arch': it links to a file not named *.arch"
    assert SECRET not in err.render()


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_use_of_a_device_is_refused_before_it_is_read(tmp_path: Path, device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    err = api_error(use_spec(tmp_path, device), UseError)
    assert err.message == f"cannot read '{device}': it is not a .arch file"
    # named like a spec, it is still no regular file
    (tmp_path / "dev.arch").symlink_to(device)
    err = api_error(use_spec(tmp_path, "dev.arch"), UseError)
    assert err.message == "cannot read 'dev.arch': it is not a regular file"


def test_a_spec_that_is_binary_or_not_utf8_is_refused_without_quoting_it(tmp_path: Path) -> None:
    (tmp_path / "bin.arch").write_bytes(b"net t {\0SECRET-BYTES\n")
    err = api_error(Path("bin.arch"))
    assert err.message == "cannot read 'bin.arch': it holds a NUL byte (line 1), so it is not a text file"
    (tmp_path / "latin1.arch").write_bytes(b"# ok\nnet t { # SECRET-\xe9\n")
    err = api_error(use_spec(tmp_path, "latin1.arch"), UseError)
    assert err.message == "cannot read 'latin1.arch': it is not UTF-8 text (an invalid byte on line 2)"
    assert "SECRET" not in err.render()


def test_the_top_level_spec_must_be_an_arch_file(tmp_path: Path) -> None:
    (tmp_path / "net.txt").write_text(NET)
    err = api_error(tmp_path / "net.txt")
    assert err.message == f"cannot read '{tmp_path / 'net.txt'}': it is not a .arch file"
    assert err.loc is None and "named *.arch" in (err.hint or "")
    (tmp_path / "dir.arch").mkdir()
    assert api_error(tmp_path / "dir.arch").message.endswith("it is not a regular file")
    # a path no file name can hold is an error, not a UnicodeEncodeError
    err = api_error(Path("\ud800.arch"))
    assert err.message == "cannot read '\ud800.arch': the path cannot be encoded as a file name"


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_use_of_proc_environ_does_not_print_the_environment(tmp_path: Path) -> None:
    main = use_spec(tmp_path, "/proc/self/environ")
    code, out, _ = run_cli("build", str(main), cwd=tmp_path, env={SECRET: "leaked"})
    assert_refused(code, out, "cannot read '/proc/self/environ': it is not a .arch file")
    assert SECRET not in out and "leaked" not in out


@posix_only
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.arch")  # nobody ever writes: opening it for reading would block
    code, out, _ = run_cli("build", "pipe.arch", cwd=tmp_path, timeout=60)
    assert code != -9, "archc hung on a FIFO"
    assert_refused(code, out, "cannot read 'pipe.arch': it is not a regular file")
    use_spec(tmp_path, "pipe.arch")
    code, out, _ = run_cli("build", "main.arch", cwd=tmp_path, timeout=60)
    assert_refused(code, out, "main.arch:1:5: error: cannot read 'pipe.arch': it is not a regular file")


# --- item 3: limits on spec size, parameters and activations -------------------------------


def test_the_shipped_specs_are_well_inside_the_default_limits() -> None:
    for path in sorted((ROOT / "specs").rglob("*.arch")):
        assert path.stat().st_size * 50 < DEFAULT_SPEC_BYTES, path
        if path.parent.name == "blocks":
            continue
        g = elaborate(load(path))
        activations = sum(_numel(n.shape) for n in g.nodes()) * 4
        # the largest shipped net, VGG-16-BN (138.4M), is 69% of the default parameter limit
        assert g.params() * 10 < DEFAULT_PARAMS * 7, path
        assert activations * 6 < DEFAULT_ACTIVATION_BYTES, path


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def test_the_parameter_limit_names_the_layer_that_crosses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "net t {\n  input 64x8x8\n  a: conv(3x3, 1000)\n  b: conv(3x3, 1000)\n}\n"
    monkeypatch.setenv("ARCHC_MAX_PARAMS", "10000000")
    assert elaborate(load(text)).params() == 576_000 + 9_000_000  # a and b
    monkeypatch.setenv("ARCHC_MAX_PARAMS", "9000000")
    err = api_error(text, LimitError)
    assert err.message == "the net's parameters reach 9,576,000, past the limit of 9,000,000 (ARCHC_MAX_PARAMS)"
    assert err.loc is not None and err.loc.line == 4
    assert err.notes == ["this conv alone has 9,000,000 parameters"]
    assert "ARCHC_MAX_PARAMS=" in (err.hint or "") and "docs/language.md#size-limits" in (err.hint or "")


def test_the_activation_limit_counts_every_value_of_one_image(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "net t(size=3x8x8) {\n  input size\n  relu\n  relu\n}\n"  # 3 values of 192 floats: 2,304 bytes
    monkeypatch.setenv("ARCHC_MAX_ACTIVATION_BYTES", "2304")
    assert len(elaborate(load(text))) == 3
    monkeypatch.setenv("ARCHC_MAX_ACTIVATION_BYTES", "2303")
    err = api_error(text, LimitError)
    assert err.message.startswith("one image's float32 activations reach 2.25 KiB (2,304 bytes), past the limit")
    assert err.loc is not None and err.loc.line == 4
    monkeypatch.delenv("ARCHC_MAX_ACTIVATION_BYTES")
    with pytest.raises(LimitError) as info:
        elaborate(load(text), {"size": "3x999999x999999"})
    assert info.value.loc is not None and info.value.loc.line == 2  # at the input, before any layer
    assert info.value.notes == ["the input 3x999999x999999 alone is 11,999,976,000,012 bytes"]


def test_a_limit_that_is_not_a_positive_integer_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHC_MAX_PARAMS", "lots")
    err = api_error(NET)
    assert err.message == "ARCHC_MAX_PARAMS='lots' is not a positive integer"


def test_spec_text_and_files_past_the_size_limit_are_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHC_MAX_SPEC_BYTES", "100")
    big = NET + "#" * 100 + "\n"
    err = api_error(big, LimitError)
    assert err.message == f"spec '<spec>' is {len(big)} bytes, past the limit of 100 bytes (ARCHC_MAX_SPEC_BYTES)"
    (tmp_path / "lib.arch").write_text(big)
    err = api_error(use_spec(tmp_path, "lib.arch"), LimitError)
    assert err.message.startswith("spec 'lib.arch' is ") and err.loc is not None and err.loc.line == 1


BOMBS = {
    # name: (spec text or None for resnet20, extra CLI arguments, words of the error)
    "wide conv": (
        "net bomb {\n  input 64x8x8\n  conv(3x3, 10000000)\n}\n",
        [],
        ["bomb.arch:3:3: error: the net's parameters reach 5,760,000,000", "(ARCHC_MAX_PARAMS)"],
    ),
    "many classes": (None, ["--set", "num_classes=16777216"], ["parameters reach", "fc: linear(num_classes)"]),
    "huge input": (None, ["--set", "input_size=3x999999x999999"], ["activations reach 10.9 TiB", "input input_size"]),
    "huge file": (
        "net bomb {\n  input 3x8x8\n}\n" + "#" * 60 + "\n" * (4 * DEFAULT_SPEC_BYTES),
        [],
        ["bomb.arch' is 4 MiB", "past the limit of 1 MiB", "ARCHC_MAX_SPEC_BYTES"],
    ),
}


@posix_only
@pytest.mark.parametrize("name", list(BOMBS))
def test_bombs_are_refused_before_any_allocation(tmp_path: Path, name: str) -> None:
    text, extra, words = BOMBS[name]
    if text is None:
        spec = str(ROOT / "specs/cifar/resnet20.arch")
    else:
        (tmp_path / "bomb.arch").write_text(text)
        spec = "bomb.arch"
    code, out, rss = run_cli("build", spec, "-o", "out", *extra, cwd=tmp_path)
    assert_refused(code, out, *words)
    assert rss < GIB, f"peak RSS {rss / 2**20:.0f} MiB while refusing"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["bomb.arch"] if text is not None else [])


def test_a_raised_limit_lets_a_large_net_through(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "net t {\n  input 64x8x8\n  conv(3x3, 400000)\n}\n"  # 230M parameters: past the default
    api_error(text, LimitError)
    monkeypatch.setenv("ARCHC_MAX_PARAMS", "300000000")
    g = archc.build(text, lower=False).graph  # elaborated; nothing allocated
    assert g.params() == 64 * 9 * 400_000
