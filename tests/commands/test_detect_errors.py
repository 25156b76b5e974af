"""`archc detect` / `archc eval` with hostile detector checkpoints and images: exit 2, the problem named."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = str(ROOT / "specs/detection/faster_rcnn_small_c4.arch")


@pytest.fixture(scope="module")
def state():
    from archc.detect.task import build_detector
    from archc.train.config import TrainConfig
    from archc.train.recipes import Recipe

    _, model = build_detector(TrainConfig(spec=SMALL, recipe=Recipe(), task="detect"))
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _weights(path: Path, state: dict, meta: object = None) -> Path:
    """A detector checkpoint; with `meta`, an archc training checkpoint header holding it."""
    header = None if meta is None else {"format": "archc-train/1", "meta": json.dumps(meta)}
    save_file(state, str(path), metadata=header)
    return path


def _image(path: Path, size: int = 64) -> Path:
    Image.fromarray(np.full((size, size, 3), 90, dtype=np.uint8)).save(path)
    return path


def _detect_fails(tmp_path: Path, weights: Path, *extra: str) -> str:
    img = _image(tmp_path / "in.png")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = CliRunner().invoke(main, ["detect", SMALL, str(img), "--weights", str(weights), *extra], catch_exceptions=False)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    return r.output


def test_wrong_shapes_are_listed(tmp_path, state):
    bad = dict(state)
    bad["roi_heads.cls_score.bias"] = bad["roi_heads.cls_score.bias"][:2].clone()
    out = _detect_fails(tmp_path, _weights(tmp_path / "w.safetensors", bad))
    assert "'roi_heads.cls_score.bias' has shape (2,), the network needs (4,)" in out


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ([1, 2], "the header's run metadata is a list"),
        ({"config": [1]}, "header field 'config.recipe.extra' is malformed (a list where an object belongs)"),
        ({"config": {"recipe": {"extra": {"global_context": 1}}}}, "header field 'config.recipe.extra'"),
        ({"data_mean": "grey"}, "header field 'data_mean' is malformed (a str where a list belongs)"),
        ({"data_mean": [0.5, 0.5]}, "header field 'data_mean' is malformed"),
        ({"class_names": ["a", 2, "c"]}, "header field 'class_names' is malformed"),
    ],
)
def test_bad_header_fields_are_named(tmp_path, state, meta, field):
    out = _detect_fails(tmp_path, _weights(tmp_path / "w.safetensors", state, meta))
    assert field in out


def test_eval_refuses_the_same_checkpoint(tmp_path, state):
    weights = _weights(tmp_path / "w.safetensors", state, {"config": {"recipe": []}})
    r = CliRunner().invoke(main, ["eval", SMALL, "--weights", str(weights)], catch_exceptions=False)
    assert r.exit_code == 2 and "header field 'config.recipe.extra' is malformed" in r.output


def test_a_decompression_bomb_is_refused(tmp_path, state, monkeypatch):
    # PIL refuses images past twice MAX_IMAGE_PIXELS; a small limit makes a 64x64 image one
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    out = _detect_fails(tmp_path, _weights(tmp_path / "w.safetensors", state))
    assert "refusing image" in out and "decompression bomb" in out


def test_output_errors(tmp_path, state):
    weights = _weights(tmp_path / "w.safetensors", state)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "cannot write image" in _detect_fails(tmp_path, weights, "-o", str(blocker / "out.png"))
    assert "cannot tell the image format" in _detect_fails(tmp_path, weights, "-o", str(tmp_path / "out.xyz"))
