"""Detection data: the shapes generator, the COCO reader, batching, COCO evaluation and drawing."""

import json

import numpy as np
import pytest
import torch

from archc.data.coco import CocoDetection, detection_batches, open_detection_data
from archc.data.shapes import ensure_shapes, write_shapes
from archc.detect.draw import draw_detections
from archc.detect.evaluate import coco_evaluate, format_table
from archc.errors import DataError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    tr, te = ensure_shapes(root / "s", train=12, test=6, seed=0)
    return CocoDetection(tr.parent, tr), CocoDetection(te.parent, te), root


def test_generator_is_deterministic_and_boxes_are_exact(shapes, tmp_path):
    train, _, _ = shapes
    a = write_shapes(tmp_path / "a", 4, seed=5)
    b = write_shapes(tmp_path / "b", 4, seed=5)
    assert json.loads(a.read_text()) == json.loads(b.read_text())
    assert (tmp_path / "a/000002.png").read_bytes() == (tmp_path / "b/000002.png").read_bytes()
    for i in range(len(train)):
        img, t = train[i]
        bg = img[:, 0, 0]
        for x1, y1, x2, y2 in t["boxes"].long().tolist():
            inside = (img[:, y1:y2, x1:x2] != bg[:, None, None]).any(0)
            # the shape touches all four sides of its box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    assert train.class_names == ["square", "circle", "triangle"]


def test_pycocotools_reads_it_and_perfect_detections_score_1(shapes):
    _, test, _ = shapes
    dets = {}
    for i in range(len(test)):
        _, t = test[i]
        dets[t["image_id"]] = {"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]}
    m = coco_evaluate(test, dets)
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    assert set(m["per_class"]) <= {"square", "circle", "triangle"}
    shifted = {k: {**v, "boxes": v["boxes"] + 6.0} for k, v in dets.items()}
    assert coco_evaluate(test, shifted)["AP"] < 0.9
    assert coco_evaluate(test, {})["AP50"] == 0.0
    assert format_table(m).row_count == len(m["per_class"]) + 1


def test_reader_errors_name_the_file(tmp_path, shapes):
    with pytest.raises(DataError, match="annotations not found"):
        CocoDetection(tmp_path, tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        CocoDetection(tmp_path, bad)
    _, test, _ = shapes
    data = json.loads(test.annotations.read_text())
    data["annotations"][0]["category_id"] = 99
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(data))
    with pytest.raises(DataError, match="unknown category 99"):
        CocoDetection(test.images_dir, odd)
    missing = CocoDetection(tmp_path, test.annotations)
    with pytest.raises(DataError, match="cannot read image"):
        missing[0]
    with pytest.raises(DataError, match="unknown detection data"):
        open_detection_data("voc:/x")


def test_batches_resize_flip_pad(shapes):
    train, _, _ = shapes
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.1, 0.2, 0.3])
    x, sizes, targets, scales = detection_batches(
        train, [0, 1, 2], min_size=100, max_size=None, flip=True, generator=g, mean=mean
    )
    assert x.shape[-1] % 16 == 0 and x.shape[-2] % 16 == 0 and sizes == [(100, 100)] * 3
    assert scales == [pytest.approx(100 / 128)] * 3
    again = detection_batches(
        train, [0, 1, 2], min_size=100, max_size=None, flip=True, generator=torch.Generator().manual_seed(0), mean=mean
    )
    assert torch.equal(again[0], x)
    # after resizing and flipping, each box still frames its shape: its centre differs from the background
    for k in range(3):
        img = x[k] + mean[:, None, None]
        for x1, y1, x2, y2 in targets[k]["boxes"].tolist():
            cy, cx = int((y1 + y2) / 2), int((x1 + x2) / 2)
            assert (img[:, cy, cx] - img[:, 1, 1]).abs().max() > 0.05


def test_drawing_marks_the_box_outline():
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    out = draw_detections(
        img, torch.tensor([[10.0, 20.0, 40.0, 50.0]]), torch.tensor([2]), torch.tensor([0.9]), ["a", "b"]
    )
    arr = np.asarray(out)
    assert arr[35, 10].any() and arr[35, 40].any() and not arr[35, 25].any()
    weak = draw_detections(
        img, torch.tensor([[10.0, 20.0, 40.0, 50.0]]), torch.tensor([1]), torch.tensor([0.1]), ["a", "b"]
    )
    assert not np.asarray(weak).any()


def test_coco_data_strings(shapes):
    train, test, root = shapes
    one = open_detection_data(f"coco:{train.images_dir},{train.annotations}")
    assert len(one.train) == len(one.test) == 12 and one.num_classes == 3
    two = open_detection_data(f"coco:{train.images_dir},{train.annotations};{test.images_dir},{test.annotations}")
    assert (len(two.train), len(two.test)) == (12, 6) and two.class_names == ["square", "circle", "triangle"]
    with pytest.raises(DataError, match="IMAGES_DIR,ANNOTATIONS"):
        open_detection_data(f"coco:{train.images_dir}")
    gen = open_detection_data("shapes:5,3", root=root / "cache")
    assert (len(gen.train), len(gen.test)) == (5, 3)
