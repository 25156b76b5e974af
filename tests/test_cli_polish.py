"""CLI conventions (docs/cli.md): examples in every --help, shell completion, colour only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from archc.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPEC = "specs/cifar/resnet20.arch"
ESC = "\x1b["
# Variables that would switch colour on or off behind the tests' backs.
COLOUR_VARS = ("NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TERM")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in COLOUR_VARS and not k.startswith("_ARCHC_")}
    env["OMP_NUM_THREADS"] = "1"  # tiny nets; idle-spinning thread pools only slow a busy machine down
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for var in COLOUR_VARS:
        monkeypatch.delenv(var, raising=False)


def _archc_script() -> list[str]:
    """The installed `archc` console script next to this interpreter (else the module form)."""
    script = Path(sys.executable).parent / "archc"
    return [str(script)] if script.is_file() else [shutil.which("archc") or "archc"]


# --- help ------------------------------------------------------------------------------------------


COMMANDS = [[]] + [[name] for name in sorted(main.commands)]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "archc")
def test_every_help_has_examples(path: list[str]) -> None:
    r = CliRunner().invoke(main, [*path, "--help"], terminal_width=100)
    assert r.exit_code == 0, r.output
    assert "Examples:" in r.stdout, f"`archc {' '.join(path)} --help` has no Examples section"
    block = r.stdout.split("Examples:", 1)[1].split("\n\n", 1)[0]
    examples = [ln.strip() for ln in block.splitlines() if ln.strip()]
    assert examples, "the Examples section is empty"
    # \b keeps one example per line, each a full command
    assert all(ln.startswith("archc ") for ln in examples), examples
    if path:
        assert any(ln.startswith(f"archc {path[0]}") for ln in examples), examples


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_short_and_long_help(flag: str) -> None:
    r = CliRunner().invoke(main, ["build", flag])
    assert r.exit_code == 0 and "Usage: " in r.stdout and "--backend" in r.stdout


def test_version() -> None:
    import archc

    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and archc.__version__ in r.stdout


@pytest.mark.parametrize("command", ["build", "backends"])
def test_table_commands_have_json(command: str) -> None:
    cmd = main.commands[command]
    assert any(isinstance(p, click.Option) and "--json" in p.opts for p in cmd.params)


# --- shell completion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F _archc_completion archc"), ("zsh", "#compdef archc"), ("fish", "complete")],
)
def test_completion_script_in_process(shell: str, marker: str) -> None:
    r = CliRunner().invoke(main, [], prog_name="archc", env={"_ARCHC_COMPLETE": f"{shell}_source"})
    assert r.exit_code == 0
    assert marker in r.stdout and "_ARCHC_COMPLETE" in r.stdout


def test_completion_script_from_the_installed_command() -> None:
    proc = subprocess.run(
        _archc_script(), capture_output=True, text=True, env=_env(_ARCHC_COMPLETE="bash_source"), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "_archc_completion()" in proc.stdout
    assert "_ARCHC_COMPLETE=bash_complete" in proc.stdout


def _complete(words: str, cword: int) -> list[str]:
    env = {"_ARCHC_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    r = CliRunner().invoke(main, [], prog_name="archc", env=env)
    assert r.exit_code == 0, r.output
    return [line.split(",", 1)[1] for line in r.stdout.splitlines() if line.startswith("plain,")]


def test_completion_completes_commands_options_and_backends() -> None:
    assert {"build", "backends"} <= set(_complete("archc b", 1))
    assert "--mode" in _complete("archc build --mo", 2)
    assert _complete(f"archc build {SPEC} --mode ", 4) == ["train", "eval"]
    assert {"torch", "triton"} <= set(_complete(f"archc build {SPEC} --backend ", 4))
    assert _complete(f"archc build {SPEC} --backend to", 4) == ["torch"]


# --- colour -----------------------------------------------------------------------------------------


def test_no_ansi_codes_through_clirunner() -> None:
    runner = CliRunner()
    for args in (["build", SPEC], ["backends"], ["--help"], ["build", "--help"]):
        r = runner.invoke(main, args)
        assert r.exit_code == 0, r.output
        assert ESC not in r.stdout, args


def test_no_ansi_codes_in_piped_output() -> None:
    # TERM says the terminal could do colour; stdout being a pipe must still win
    for args in (["build", SPEC], ["backends"]):
        proc = subprocess.run(
            [sys.executable, "-m", "archc", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=_env(TERM="xterm-256color"),
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert ESC not in proc.stdout and ESC not in proc.stderr, args
        assert "resnet20" in proc.stdout or "torch" in proc.stdout


def test_spec_errors_have_no_ansi_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.arch"
    bad.write_text("net n {\n  input 3x8x8\n  cnv(3x3, 4)\n}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "archc", "build", str(bad)],
        capture_output=True,
        text=True,
        env=_env(TERM="xterm-256color"),
        timeout=120,
    )
    assert proc.returncode == 2
    assert "error: unknown layer or block 'cnv'" in proc.stderr and ESC not in proc.stderr


def _on_a_tty(args: list[str], env: dict[str, str]) -> str:
    """Run `python -m archc ARGS` with stdout and stderr on a pseudo-terminal; return what it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "archc", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env=env,
    )
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                break
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            out += data
    finally:
        os.close(master)
        proc.wait(timeout=120)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_colour_on_a_terminal_and_no_color_turns_it_off() -> None:
    on_tty = _on_a_tty(["build", SPEC], _env(TERM="xterm-256color"))
    assert ESC in on_tty and "269,722" in on_tty  # rich styles the table on a terminal
    # rich alone would drop only the colours and keep bold; make_console() drops every style
    plain = _on_a_tty(["build", SPEC], _env(TERM="xterm-256color", NO_COLOR="1"))
    assert ESC not in plain and "269,722" in plain


def test_no_color_in_process_json_is_plain() -> None:
    r = CliRunner().invoke(main, ["backends", "--json"], env={"NO_COLOR": "1"})
    assert r.exit_code == 0
    assert json.loads(r.stdout)["group"] == "archc.backends"
