"""The shapes generator: determinism, exact boxes, valid COCO JSON, the cache and its manifest."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from archc.data import shapes
from archc.data.shapes import ensure_shapes, write_shapes
from archc.errors import DataError


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "one"
    return root, write_shapes(root, 24, seed=3, size=96)


def _shape_masks(root, data):
    """image id -> boolean mask of shape pixels (every channel at the shape brightness)."""
    out = {}
    for im in data["images"]:
        arr = np.asarray(Image.open(root / im["file_name"]).convert("RGB"))
        out[im["id"]] = arr.min(axis=2) >= shapes.SHAPE_MIN_LEVEL
    return out


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = write_shapes(tmp_path / "a", 5, seed=11, size=64)
    b = write_shapes(tmp_path / "b", 5, seed=11, size=64)
    c = write_shapes(tmp_path / "c", 5, seed=12, size=64)
    assert a.read_text() == b.read_text()
    for i in range(5):
        assert (tmp_path / "a" / f"{i:06d}.png").read_bytes() == (tmp_path / "b" / f"{i:06d}.png").read_bytes()
    assert a.read_text() != c.read_text()


def test_coco_json_has_every_field_and_pycocotools_loads_it(small):
    root, path = small
    data = json.loads(path.read_text())
    assert data["categories"] == [
        {"id": 1, "name": "square"},
        {"id": 2, "name": "circle"},
        {"id": 3, "name": "triangle"},
    ]
    assert [im["id"] for im in data["images"]] == list(range(1, 25))
    assert all(im["width"] == im["height"] == 96 and (root / im["file_name"]).is_file() for im in data["images"])
    per_image = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert a["iscrowd"] == 0 and a["category_id"] in (1, 2, 3) and a["area"] == w * h
        assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96
        assert 9 <= w <= 48  # 96 // 10 .. 96 // 2
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    assert set(per_image.values()) <= {1, 2, 3, 4} and len(per_image) == 24
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    assert {a["category_id"] for a in data["annotations"]} == {1, 2, 3}

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    assert len(coco.getImgIds()) == 24 and coco.getCatIds() == [1, 2, 3]


def test_boxes_are_the_exact_pixel_extents_of_the_shapes(small):
    root, path = small
    data = json.loads(path.read_text())
    masks = _shape_masks(root, data)
    covered = {k: np.zeros_like(m) for k, m in masks.items()}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        inside = masks[a["image_id"]][y : y + h, x : x + w]
        # the shape touches all four sides of its box
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        covered[a["image_id"]][y : y + h, x : x + w] = True
        if a["category_id"] == 1:
            assert inside.all()
        else:
            # circles and triangles leave the corners of their box empty
            assert not inside.all() and inside.mean() > 0.3
    for k, m in masks.items():
        # no shape pixel lies outside every box
        assert not (m & ~covered[k]).any()


def test_noise_changes_the_background_only(tmp_path):
    plain = write_shapes(tmp_path / "plain", 3, seed=4, size=64)
    noisy = write_shapes(tmp_path / "noisy", 3, seed=4, size=64, noise=20)
    assert plain.read_text() == noisy.read_text()
    data = json.loads(plain.read_text())
    a, b = _shape_masks(tmp_path / "plain", data), _shape_masks(tmp_path / "noisy", data)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    bg = np.asarray(Image.open(tmp_path / "noisy" / "000000.png"))[~b[1]]
    assert bg.std(axis=0).max() > 5


def test_bad_parameters_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="8x8"):
        write_shapes(tmp_path / "x", 2, seed=0, size=8)
    with pytest.raises(DataError, match="noise 60"):
        write_shapes(tmp_path / "x", 2, seed=0, noise=60)


def test_ensure_reuses_a_complete_copy_and_regenerates_otherwise(tmp_path):
    root = tmp_path / "cache"
    tr, te = ensure_shapes(root, train=4, test=2, seed=1)
    assert tr == root / "train" / "annotations.json" and te == root / "test" / "annotations.json"
    assert len(json.loads(tr.read_text())["images"]) == 4 and len(json.loads(te.read_text())["images"]) == 2
    # train and test come from different seeds
    assert (root / "train" / "000000.png").read_bytes() != (root / "test" / "000000.png").read_bytes()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest == {"version": shapes.VERSION, "train": 4, "test": 2, "seed": 1, "size": 128, "noise": 0}

    stamp = tr.stat().st_mtime_ns
    ensure_shapes(root, train=4, test=2, seed=1)
    assert tr.stat().st_mtime_ns == stamp  # reused

    (root / "train" / "000003.png").unlink()  # incomplete: regenerated
    ensure_shapes(root, train=4, test=2, seed=1)
    assert (root / "train" / "000003.png").is_file()

    ensure_shapes(root, train=5, test=2, seed=1)  # other parameters: regenerated
    assert len(json.loads(tr.read_text())["images"]) == 5
    assert json.loads((root / "manifest.json").read_text())["train"] == 5
    # no temporary folders are left beside the cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
