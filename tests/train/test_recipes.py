"""Recipes: the paper's presets, overrides, recipe files, iteration scaling and the schedule."""

import json

import pytest

from archc.errors import TrainError
from archc.train.recipes import CIFAR, IMAGENET, default_recipe, load_recipe, override
from archc.train.schedule import Schedule


def test_cifar_preset_is_section_4_2():
    r = load_recipe("cifar")
    assert (r.lr, r.momentum, r.weight_decay, r.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (r.iters, r.milestones, r.gamma) == (64000, (32000, 48000), 0.1)
    assert (r.pad_crop, r.flip, r.mean) == (4, True, "pixel")
    assert (r.warmup_lr, r.warmup_error, r.warmup_depth) == (0.01, 0.8, 110)


def test_imagenet_preset_is_section_3_4():
    r = load_recipe("imagenet")
    assert (r.lr, r.momentum, r.weight_decay, r.batch_size, r.iters) == (0.1, 0.9, 1e-4, 256, 600_000)
    assert r.schedule == "plateau" and r.scale == (256, 480) and r.pca_std == 0.1
    assert r.test_crop == "ten" and r.flip and r.mean == "pixel"


def test_scaling_keeps_the_shape_of_the_schedule():
    r = CIFAR.scaled(6400)
    assert r.iters == 6400 and r.milestones == (3200, 4800)
    assert r.eval_every == 200 and r.log_every <= r.eval_every
    s = Schedule(r, depth=20)
    assert [s.lr(i) for i in (0, 3199, 3200, 4799, 4800, 6399)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    with pytest.raises(TrainError):
        CIFAR.scaled(0)


def test_overrides_parse_strings_to_field_types():
    r = override(CIFAR, {"lr": "0.05", "milestones": "10,20", "flip": "false", "warmup_lr": "none", "batch_size": "64"})
    assert (r.lr, r.milestones, r.flip, r.warmup_lr, r.batch_size) == (0.05, (10, 20), False, None, 64)
    with pytest.raises(TrainError, match="did you mean 'momentum'"):
        override(CIFAR, {"momentun": "0.8"})
    with pytest.raises(TrainError, match="bad value"):
        override(CIFAR, {"lr": "fast"})
    with pytest.raises(TrainError, match="milestones must not decrease"):
        override(CIFAR, {"milestones": "20,10"})
    with pytest.raises(TrainError, match="schedule"):
        override(CIFAR, {"schedule": "cosine"})


def test_recipe_files_toml_and_json(tmp_path):
    p = tmp_path / "short.toml"
    p.write_text('base = "cifar"\nlr = 0.2\nmilestones = [100, 150]\niters = 200\n')
    r = load_recipe(p)
    assert (r.lr, r.milestones, r.iters, r.pad_crop) == (0.2, (100, 150), 200, 4)
    q = tmp_path / "in.json"
    q.write_text(json.dumps({"base": "imagenet", "batch_size": 32}))
    assert load_recipe(q).batch_size == 32 and load_recipe(q).schedule == "plateau"
    with pytest.raises(TrainError, match="unknown recipe"):
        load_recipe("cifar100")
    with pytest.raises(TrainError, match="not found"):
        load_recipe(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1")
    with pytest.raises(TrainError, match="cannot read"):
        load_recipe(bad)


def test_default_recipe_by_input_size():
    assert default_recipe((3, 32, 32)) is CIFAR
    assert default_recipe((3, 224, 224)) is IMAGENET


def test_warmup_only_for_deep_nets_and_until_error_below_80_percent():
    assert not Schedule(CIFAR, depth=56).warming
    s = Schedule(CIFAR, depth=110)
    assert s.warming and s.lr(0) == 0.01
    s.observe_train_error(10, 0.85)
    assert s.lr(11) == 0.01
    s.observe_train_error(12, 0.79)
    assert not s.warming and s.warmup_ended_at == 12 and s.lr(13) == 0.1
    assert s.lr(40000) == pytest.approx(0.01)


def test_plateau_drops_after_patience_and_state_round_trips():
    r = override(IMAGENET, {"plateau_patience": "2", "max_drops": "2"})
    s = Schedule(r, depth=50)
    errors = [0.9, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    drops = [s.observe_test_error(i, e) for i, e in enumerate(errors)]
    assert drops == [False, False, False, True, False, False, True, False, False, False]
    assert s.lr(100) == pytest.approx(0.001) and s.drop_iters == [3, 6]
    t = Schedule(r, depth=50)
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert t.state_dict() == s.state_dict() and t.lr(100) == s.lr(100)


def test_the_recipe_file_in_the_docs_loads(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs/training.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    p = tmp_path / "short.toml"
    p.write_text(block)
    r = load_recipe(p)
    assert (r.iters, r.milestones, r.warmup_lr, r.pad_crop) == (6400, (3200, 4800), None, 4)


def test_scaling_keeps_a_minimum_test_interval():
    # --iters 20 of the CIFAR recipe (a test every 2000 of 64000) once ran 20 test passes
    r = CIFAR.scaled(20)
    assert r.eval_every == 20 and r.log_every <= 20
    r = CIFAR.scaled(800)  # the embedded digits' default: 25 = 2000 * 800 / 64000 is the floor
    assert r.eval_every == 25
    assert CIFAR.scaled(100).eval_every == 25 and CIFAR.scaled(64).eval_every == 25
    # an explicit interval still wins
    assert override(CIFAR.scaled(20), {"eval_every": "3"}).eval_every == 3
