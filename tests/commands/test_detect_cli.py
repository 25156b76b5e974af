"""Detection end to end: `archc train` on shapes to mAP@.5 >= 0.5, `archc eval`, `archc detect`, backbone init."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from archc.cli import main
from archc.errors import WeightsError

ROOT = Path(__file__).resolve().parents[2]
SMALL = str(ROOT / "specs/detection/faster_rcnn_small_c4.arch")


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_the_shapes_demo_recipe_is_1500_iterations():
    from archc.detect.task import detection_recipe

    r = detection_recipe(None, None, None, None, {})
    assert (r.name, r.iters, r.milestones, r.batch_size, r.lr) == ("shapes", 1500, (1000, 1300), 4, 0.02)


@pytest.mark.slow
def test_shapes_demo_reaches_map50_of_0_5_in_750_iterations_then_eval_and_detect(tmp_path, monkeypatch):
    # The demo's 1,500 iterations (measured in BENCHMARKS.md) are this recipe scaled by --iters; 750 of them
    # already reach mAP@.5 >= 0.5 (0.585 measured on 2026-11-30) in half the time, which keeps the suite
    # short. The work is bounded; its wall time is not asserted here.
    monkeypatch.chdir(tmp_path)  # the generated data set goes to runs/data here
    r = _run(["train", SMALL, "--data", "shapes", "--iters", "750", "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["iterations"] == 750 and out["recipe"]["milestones"] == [500, 650], out["recipe"]
    assert out["final"]["AP50"] >= 0.5, out["final"]
    run = Path(out["run_dir"])
    best = run / "best.safetensors"
    e = _run(["eval", SMALL, "--weights", str(best), "--data", "shapes", "--json"])
    assert e.exit_code == 0, e.output
    metrics = json.loads(e.stdout)
    assert metrics["AP50"] == pytest.approx(out["best"]["AP50"], abs=1e-6)
    assert set(metrics["per_class"]) == {"square", "circle", "triangle"}
    table = _run(["eval", SMALL, "--weights", str(best), "--data", "shapes"])
    assert "AP@.5" in table.stdout and "triangle" in table.stdout
    image = tmp_path / "runs/data/shapes-600-100/test/000000.png"
    d = _run(["detect", SMALL, "--weights", str(best), str(image), "-o", str(tmp_path / "drawn.png"), "--json"])
    assert d.exit_code == 0, d.output
    found = json.loads(d.stdout)[0]["detections"]
    assert found and {f["class"] for f in found} <= {"square", "circle", "triangle"}
    assert (tmp_path / "drawn.png").read_bytes()[:4] == b"\x89PNG"
    curves = _run(["plot", str(run), "--metric", "AP50", "--json"])
    assert json.loads(curves.stdout)["runs"][0]["test"]["value"][-1] == pytest.approx(out["final"]["AP50"])


def test_detector_training_keeps_frozen_parts_and_bn(tmp_path):
    from archc.detect.task import build_detector
    from archc.train.config import TrainConfig
    from archc.train.recipes import Recipe

    cfg = TrainConfig(spec=SMALL, recipe=Recipe(extra={"freeze_at": "1"}), task="detect")
    _, model = build_detector(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9, weight_decay=1e-4)
    model.train()
    img = torch.rand(2, 3, 128, 128)
    t = [{"boxes": torch.tensor([[20.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([1])}] * 2
    for _ in range(2):
        loss = sum(model(img, [(128, 128)] * 2, t, torch.Generator().manual_seed(0)).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    for k, v in before.items():
        frozen = k.startswith(("trunk.conv1.", "trunk.bn1.", "trunk.layer1.")) or ".bn" in k or "downsample.1" in k
        assert torch.equal(after[k], v) == frozen, k


def test_backbone_from_a_classification_checkpoint_checks_the_stride_convention(tmp_path):
    from safetensors.torch import save_file

    from archc.bench.reference import resnet
    from archc.detect.task import build_detector, init_backbone
    from archc.train.config import TrainConfig
    from archc.train.recipes import Recipe

    ref = resnet(50, stride_in_1x1=False)  # torchvision's convention: the 3x3 strides
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    path = tmp_path / "r50_torchvision.pth"
    torch.save(state, path)
    spec = str(ROOT / "specs/detection/faster_rcnn_r50_c4.arch")
    cfg = TrainConfig(spec=spec, recipe=Recipe(), task="detect", overrides={"stride_in_1x1": "false"})
    graph, model = build_detector(cfg)
    assert init_backbone(model, path, graph) == len(state) - 2  # everything but fc
    assert torch.equal(model.trunk.state_dict()["layer3.5.conv2.weight"], state["layer3.5.conv2.weight"])
    assert torch.equal(model.roi_heads.head.state_dict()["layer4.0.conv1.weight"], state["layer4.0.conv1.weight"])
    paper = TrainConfig(spec=spec, recipe=Recipe(), task="detect")
    graph, model = build_detector(paper)
    with pytest.raises(WeightsError, match="stride_in_1x1=false"):
        init_backbone(model, path, graph)
    small = tmp_path / "small.safetensors"
    save_file({"conv1.weight": torch.zeros(1)}, str(small))
    with pytest.raises(WeightsError):
        init_backbone(model, small, graph)
