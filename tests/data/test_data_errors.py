"""Hostile data sets: CIFAR labels of the wrong type, COCO file names leaving the image folder, image bombs."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from archc.cli import main
from archc.data.classify import open_classify_data
from archc.data.coco import CocoDetection
from archc.data.folder import imagefolder
from archc.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
R20 = str(ROOT / "specs/cifar/resnet20.arch")
SMALL = str(ROOT / "specs/detection/faster_rcnn_small_c4.arch")
NAMES = [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()]


def _cifar(root: Path, test_batch: dict) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 2]}
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    (root / "test_batch").write_bytes(pickle.dumps(test_batch, protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": NAMES}, protocol=2))
    return root


def _train_fails(args: list[str], runs: Path) -> str:
    r = CliRunner().invoke(main, ["train", *args, "--runs", str(runs), "--iters", "1"], catch_exceptions=False)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert not runs.exists()  # refused before a run directory is made
    return r.output


@pytest.mark.parametrize("labels", [["cat", "dog"], [1.5, 2.0], [True, False], [[1], [2]]])
def test_cifar_labels_of_the_wrong_type_exit_2(tmp_path, labels):
    data = np.zeros((2, 3072), dtype=np.uint8)
    root = _cifar(tmp_path / "cifar", {b"data": data, b"labels": labels})
    out = _train_fails([R20, "--data", f"cifar10:{root}"], tmp_path / "runs")
    assert f"{root / 'test_batch'}: labels must be a list of integers 0..9" in out


@pytest.mark.parametrize("data", [[], np.zeros((0, 3072), dtype=np.uint8)])
def test_an_empty_cifar_batch_loads(tmp_path, data):
    root = _cifar(tmp_path / "cifar", {b"data": data, b"labels": []})
    d = open_classify_data(f"cifar10:{root}", input_shape=(3, 32, 32), num_classes=10)
    assert len(d.train) == 10 and len(d.test) == 0


def _coco(tmp_path: Path, file_name: str) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(images / "a.png")
    ann = {
        "images": [{"id": 1, "file_name": file_name, "width": 32, "height": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    return images, path


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "sub/../../x.png", "C:\\x.png", ""])
def test_a_coco_file_name_outside_the_image_folder_exits_2(tmp_path, name):
    images, ann = _coco(tmp_path, name)
    out = _train_fails([SMALL, "--data", f"coco:{images},{ann}"], tmp_path / "runs")
    assert f"image file_name {name!r} points outside the image folder" in out


def test_a_coco_file_name_in_a_subfolder_is_fine(tmp_path):
    images, ann = _coco(tmp_path, "./a.png")
    assert CocoDetection(images, ann)[0][0].shape == (3, 32, 32)


def test_decompression_bombs_are_data_errors(tmp_path, monkeypatch):
    images, ann = _coco(tmp_path, "a.png")
    for split in ("train", "val"):
        (tmp_path / "folder" / split / "x").mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "folder" / split / "x" / "a.png")
    folder = imagefolder(tmp_path / "folder").train
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32x32 is past twice this: a "bomb"
    with pytest.raises(DataError, match="refusing image .*a.png.*decompression bomb"):
        CocoDetection(images, ann)[0]
    with pytest.raises(DataError, match="refusing image .*a.png.*decompression bomb"):
        folder.load(torch.tensor([0]))
