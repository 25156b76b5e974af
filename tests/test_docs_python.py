"""The tutorial in docs/writing-blocks.md works as written.

A reader creates the files the tutorial names, runs the commands it shows and pastes its
Python. So does this test:

* every fenced block whose info string says `file=NAME` (```arch file=preact.arch) is written
  to a fresh directory, which becomes the working directory;
* every ```text block that starts with `$ archc ...` is run (in process; `| grep -E "..."` is
  applied as a regex) and each line it shows must appear in the real output, except the
  timing line;
* the ```python blocks run top to bottom in one namespace, as one session.

The repository root is not the working directory because the tutorial's files live in the
reader's own directory. Its snippets use small sizes (n=1, one batch of 16) so this is quick.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from archc.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "writing-blocks.md"]

_FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_TIMINGS = re.compile(r"\d ms\b")


def _blocks(path: Path) -> list[tuple[int, str, str, str]]:
    """(line, tag, info after the tag, body) of every fenced block."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2).strip(), m.group(3)) for m in _FENCE.finditer(text)
    ]


def _file_name(info: str) -> str | None:
    m = re.search(r"\bfile=(\S+)", info)
    return m.group(1) if m else None


def _write_files(path: Path, where: Path) -> list[str]:
    names = []
    for _, _, info, body in _blocks(path):
        name = _file_name(info)
        if name:
            target = where / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body, encoding="utf-8")
            names.append(name)
    return names


def _run_shown_command(line: str) -> str:
    """Run `archc ...` [| grep -E "PATTERN"] in process and return what it prints."""
    command, _, grep = line.partition("|")
    args = shlex.split(command)
    assert args[0] == "archc", line
    r = CliRunner().invoke(main, args[1:], env={"COLUMNS": "80", "NO_COLOR": None, "FORCE_COLOR": None})
    assert r.exit_code == 0, f"{line}\n{r.output}"
    out = r.stdout
    if grep:
        g = shlex.split(grep)
        assert g[:2] == ["grep", "-E"] and len(g) == 3, f"unsupported filter in {line!r}"
        out = "".join(ln for ln in out.splitlines(keepends=True) if re.search(g[2], ln))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_tutorial_files_commands_and_python(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks(doc)
    files = _write_files(doc, tmp_path)
    assert files, f"{doc.name} names no files to create"
    monkeypatch.chdir(tmp_path)

    shown = [(ln, body) for ln, tag, _, body in blocks if tag == "text" and body.startswith("$ archc ")]
    assert shown, f"{doc.name} shows no archc command"
    for line_no, body in shown:
        first, *expected = body.splitlines()
        actual = {ln.rstrip() for ln in _run_shown_command(first[2:]).splitlines()}
        for want in expected:
            if want.strip() in ("", "...") or _TIMINGS.search(want):
                continue
            assert want.rstrip() in actual, f"{doc.name}:{line_no}: `{first}` does not print {want!r}"

    namespace: dict = {"__name__": "__tutorial__"}
    snippets = [(ln, body) for ln, tag, _, body in blocks if tag == "python"]
    assert snippets, f"{doc.name} has no ```python block"
    # one intra-op thread: these nets are tiny, and on a busy machine spinning thread pools
    # make each training step up to a hundred times slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for line_no, body in snippets:
            exec(compile(body, f"{doc.name}:{line_no}", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)


def test_writing_blocks_inline_claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated-source line and the n=18 count that the tutorial quotes in its prose."""
    doc = DOCS[0]
    text = doc.read_text(encoding="utf-8")
    _write_files(doc, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["build", "preact20.arch", "-o", "out"]).exit_code == 0
    line = "m_layer2_0.shortcut = nn.Conv2d(16, 32, 1, stride=2, bias=False)"
    assert line in text and line in (tmp_path / "out" / "preact20.py").read_text()

    import archc

    assert "1,730,522" in text
    assert archc.build("preact20.arch", overrides={"n": 18}, lower=False).graph.params() == 1_730_522
