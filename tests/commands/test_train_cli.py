"""`archc train`, `archc eval`, `archc plot` from the command line."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
R20 = str(ROOT / "specs/cifar/resnet20.arch")


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_the_default_command_trains_800_iterations_of_the_cifar_recipe_on_the_embedded_digits():
    from archc.commands.train import resolve_recipe

    r = resolve_recipe(None, (3, 32, 32), None, None, None, None, {})
    assert (r.name, r.iters, r.milestones, r.batch_size, r.lr) == ("cifar", 800, (400, 600), 128, 0.1)
    assert resolve_recipe(None, (3, 32, 32), "digits", None, None, None, {}) == r


@pytest.mark.slow
def test_training_reaches_95_percent_on_the_embedded_digits_in_300_iterations_then_eval_and_plot(tmp_path):
    # The default command's 800 iterations (measured in BENCHMARKS.md) are this same recipe scaled by
    # --iters; 300 of them already reach >= 95% (97.5% measured on 2026-11-30) in well under half the time,
    # which keeps the suite short. The work is bounded; its wall time is not asserted here.
    r = _run(["train", R20, "--iters", "300", "--runs", str(tmp_path), "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["iterations"] == 300 and out["recipe"]["milestones"] == [150, 225]
    assert 1 - out["final"]["error"] >= 0.95, out["final"]
    run = Path(out["run_dir"])
    assert {p.name for p in run.iterdir()} >= {"metrics.jsonl", "last.safetensors", "best.safetensors"}
    # archc eval on the best checkpoint reproduces the best test error (folded BN, eval pipeline)
    e = _run(["eval", R20, "--weights", str(run / "best.safetensors"), "--json"])
    assert e.exit_code == 0, e.output
    metrics = json.loads(e.stdout)
    assert metrics["images"] == 359 and metrics["error"] == pytest.approx(out["best"]["error"], abs=1 / 359)
    table = _run(["eval", R20, "--weights", str(run / "best.safetensors")])
    assert "top-1 error" in table.stdout
    p = _run(["plot", str(run), "-o", str(tmp_path / "curves.png")])
    assert p.exit_code == 0 and (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_short_run_writes_records_and_plot_json(tmp_path):
    r = _run(
        [
            "train",
            R20,
            "--runs",
            str(tmp_path),
            "--iters",
            "6",
            "--batch-size",
            "32",
            "--no-progress",
            "--hp",
            "eval_every=3",
            "--hp",
            "log_every=2",
            "--name",
            "tiny",
        ]
    )
    assert r.exit_code == 0, r.output
    run = tmp_path / "tiny-0001"
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in recs if x["split"] == "train"] == [2, 4, 6]
    assert [x["iter"] for x in recs if x["split"] == "test"] == [3, 6]
    assert all({"loss", "error", "lr", "img_s", "time", "epoch"} <= x.keys() for x in recs if x["split"] == "train")
    second = _run(
        ["train", R20, "--runs", str(tmp_path), "--iters", "2", "--batch-size", "32", "--no-progress", "--name", "tiny"]
    )
    assert second.exit_code == 0 and (tmp_path / "tiny-0002").is_dir()
    j = _run(["plot", str(run), str(tmp_path / "tiny-0002"), "--json"])
    data = json.loads(j.stdout)
    assert [c["run"] for c in data["runs"]] == ["tiny-0001", "tiny-0002"]
    assert data["runs"][0]["test"]["iter"] == [3, 6] and data["train_style"] == "dashed"
    svg = _run(["plot", str(run), "--metric", "loss", "-o", str(tmp_path / "loss.svg")])
    assert svg.exit_code == 0 and b"<svg" in (tmp_path / "loss.svg").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "cifar10:/nowhere/cifar"], "CIFAR-10 directory not found: /nowhere/cifar"),
        (["--set", "num_classes=7"], "has 10 classes but the net's head predicts 7"),
        (["--recipe", "cifar100"], "unknown recipe 'cifar100'"),
        (["--hp", "momentun=0.5"], "did you mean 'momentum'"),
        (["--amp", "fp16", "--device", "cpu"], "--amp fp16 needs a GPU"),
        (["--data", "synthetic:4", "--batch-size", "8"], "fewer than one batch"),
    ],
)
def test_errors_exit_2_without_traceback(tmp_path, args, message):
    r = CliRunner().invoke(main, ["train", R20, "--runs", str(tmp_path), "--iters", "2", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_resume_and_plot_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["train", R20, "--resume", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "no last.safetensors" in r.output
    p = CliRunner().invoke(main, ["plot", str(tmp_path / "empty"), "-o", str(tmp_path / "x.png")])
    assert p.exit_code == 2 and "no metrics log" in p.output
    e = CliRunner().invoke(main, ["eval", R20, "--weights", str(tmp_path / "none.safetensors")])
    assert e.exit_code == 2 and "not found" in e.output


@pytest.mark.slow
def test_triton_backend_trains_like_the_torch_backend(tmp_path):
    """--backend triton trains with the fused BN(+add)+ReLU kernels (here in Triton's CPU interpreter)."""
    import torch

    import archc
    from archc.train.checkpoint import load_checkpoint

    args = ["--data", "synthetic:16", "--batch-size", "4", "--iters", "2", "--no-progress", "--hp", "lr=0.05"]
    for backend in ("torch", "triton"):
        r = _run(["train", R20, "--backend", backend, "--runs", str(tmp_path / backend), *args])
        assert r.exit_code == 0, r.output
    a = load_checkpoint(next((tmp_path / "torch").glob("*/last.safetensors"))).model
    b = load_checkpoint(next((tmp_path / "triton").glob("*/last.safetensors"))).model
    torch.manual_seed(0)
    init = archc.compile(R20).state_dict()
    for k, v in init.items():
        update = (a[k].double() - v.double()).abs().max().item()
        diff = (a[k].double() - b[k].double()).abs().max().item()
        assert diff <= 0.05 * update + 1e-6, (k, diff, update)
    assert (a["layer1.0.bn1.running_mean"] - init["layer1.0.bn1.running_mean"]).abs().max() > 1e-4
