"""`archc train --resume` guards: a locked run dir, another spec, a changed spec, edited headers, temp files,
a run with only `best`; and SIGTERM writing a checkpoint that --resume continues from."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

from archc.cli import main
from archc.train.checkpoint import load_checkpoint
from archc.train.runs import RunLock

ROOT = Path(__file__).resolve().parents[2]
R32 = str(ROOT / "specs/cifar/resnet32.arch")
COMMON = ["--data", "synthetic:32", "--batch-size", "16", "--no-progress", "--device", "cpu"]
SPEC = """use "{blocks}"

net tiny(n=1, num_classes={classes}, input_size=3x16x16) {{
  input input_size
  cifar_resnet(n, shortcut=A, num_classes=num_classes)
}}
"""


def _spec(path: Path, classes: int = 10) -> Path:
    path.write_text(SPEC.format(blocks=ROOT / "specs/blocks/cifar.arch", classes=classes))
    return path


def _invoke(args: list) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-iteration run (checkpoints at 2 and 4) of a tiny spec: (spec, run dir)."""
    root = tmp_path_factory.mktemp("base")
    spec = _spec(root / "tiny.arch")
    r = _invoke(["train", spec, *COMMON, "--iters", "4", "--hp", "eval_every=2", "--runs", root / "runs"])
    assert r.exit_code == 0, r.output
    return spec, root / "runs" / "tiny-0001"


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, its last checkpoint rewound to iteration 2 (so there is work to resume)."""
    spec, src = finished
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    _edit(dst / "last.safetensors", lambda meta: meta["meta"].update(iteration=2))
    return spec, dst


def _edit(path: Path, change) -> None:
    """Rewrite a checkpoint's header: change(header) edits {"meta": dict, "optimizer": dict, ...} in place."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    parsed = {k: json.loads(v) if k != "format" else v for k, v in header.items()}
    change(parsed)
    save_file(tensors, str(path), metadata={k: v if k == "format" else json.dumps(v) for k, v in parsed.items()})


def _resume_fails(spec, run: Path, *messages: str, extra: tuple = ()) -> str:
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    r = _invoke(["train", spec, "--resume", run, "--no-progress", *extra])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    for m in messages:
        assert m in r.output, r.output
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}
    return r.output


def test_a_run_dir_in_use_is_refused(run):
    spec, d = run
    lock = RunLock(d)  # as another `archc train` holding the run
    try:
        _resume_fails(spec, d, f"run directory {d} is in use by another archc train (process {os.getpid()})")
    finally:
        lock.release()
    r = _invoke(["train", spec, "--resume", d, "--no-progress"])
    assert r.exit_code == 0, r.output
    train_iters = [json.loads(x)["iter"] for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert train_iters.count(4) == 2  # one train and one test record, written once


def test_another_spec_or_other_set_values_are_refused(run):
    spec, d = run
    _resume_fails(R32, d, f"the run was started with the spec {spec}, not {R32}")
    _resume_fails(spec, d, "other --set values", "resume without --set", extra=("--set", "num_classes=7"))


def test_a_spec_changed_in_place_is_refused(run, tmp_path):
    spec, d = run
    edited = _spec(tmp_path / "tiny.arch", classes=7)
    _edit(d / "last.safetensors", lambda h: h["meta"]["config"].update(spec=str(edited)))
    _resume_fails(edited, d, "the checkpoint does not fit the net", "'fc.weight' has shape (10, 64)", "(7, 64)")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h["meta"].update(iteration="2"), "the checkpoint's iteration '2' is not a count in 0..4"),
        (lambda h: h["meta"].update(iteration=-1), "the checkpoint's iteration -1"),
        (lambda h: h["meta"].update(iteration=10**9), "is not a count in 0..4"),
        (lambda h: h["meta"]["config"]["recipe"].update(lr="fast"), "bad value 'fast' for recipe field 'lr'"),
        (lambda h: h["meta"]["config"]["recipe"].update(milestones=3), "the checkpoint's recipe is malformed"),
        (lambda h: h["meta"]["config"]["recipe"].update(iters=[4]), "the checkpoint's recipe is malformed"),
        (lambda h: h["meta"]["config"]["recipe"].update(nesterov=1), "field 'nesterov' holds 1"),
        (lambda h: h["optimizer"]["param_groups"][0].update(lr="x"), "the checkpoint's optimizer lr 'x'"),
        (lambda h: h["optimizer"]["param_groups"][0].update(lr=float("nan")), "optimizer lr nan"),
        (lambda h: h["meta"].update(best={"error": "low"}), "best result is malformed"),
    ],
)
def test_malformed_header_fields_exit_2(run, change, message):
    spec, d = run
    _edit(d / "last.safetensors", change)
    _resume_fails(spec, d, message)


def test_temp_files_of_a_killed_run_are_removed_on_resume(run):
    spec, d = run
    stale = d / ".last.safetensors.0badf00d.tmp"
    stale.write_bytes(b"half a checkpoint")
    r = _invoke(["train", spec, "--resume", d, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert not stale.exists() and load_checkpoint(d / "last.safetensors").meta["iteration"] == 4


def test_a_run_killed_during_its_first_last_write_resumes_from_best(run):
    spec, d = run
    (d / "last.safetensors").unlink()  # what a kill during the first `last` write leaves (best comes first)
    (d / ".last.safetensors.12345678.tmp").write_bytes(b"torn")
    best_at = load_checkpoint(d / "best.safetensors").meta["iteration"]
    r = _invoke(["train", spec, "--resume", d, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"resuming from {d / 'best.safetensors'}" in r.output and f"resuming at {best_at}" in r.output
    assert load_checkpoint(d / "last.safetensors").meta["iteration"] == 4
    assert sorted(p.name for p in d.iterdir()) == [".lock", "best.safetensors", "last.safetensors", "metrics.jsonl"]


def test_sigterm_writes_a_checkpoint_and_resume_continues(tmp_path):
    spec = _spec(tmp_path / "tiny.arch")
    runs = tmp_path / "runs"
    args = ["train", str(spec), *COMMON, "--iters", "100000", "--hp", "eval_every=100000", "--runs", str(runs)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "archc", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(runs.glob("*/.lock")):
            time.sleep(0.1)
        time.sleep(1.0)  # some iterations in
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    (run,) = runs.iterdir()
    stopped = load_checkpoint(run / "last.safetensors").meta["iteration"]
    assert 0 < stopped < 100000
    assert f"stopped by SIGTERM at iteration {stopped}: checkpoint written" in err and f"--resume {run}" in err
    # a shorter recipe in the header, so that the resumed run ends soon
    _edit(run / "last.safetensors", lambda h: h["meta"]["config"]["recipe"].update(iters=stopped + 2))
    r = _invoke(["train", spec, "--resume", run, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"resuming at {stopped}" in r.output
    assert load_checkpoint(run / "last.safetensors").meta["iteration"] == stopped + 2
