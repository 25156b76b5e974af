"""COCO evaluation through pycocotools: perfect, shifted, partial and missing detections, per-class AP."""

import json

import pytest
import torch
from rich.console import Console

from archc.data.coco import CocoDetection
from archc.data.shapes import write_shapes
from archc.detect.evaluate import KEYS, coco_evaluate, format_table
from archc.errors import DataError


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return CocoDetection(root, write_shapes(root, 10, seed=2, size=128))


def _perfect(ds):
    dets = {}
    for i in range(len(ds)):
        _, t = ds[i]
        dets[t["image_id"]] = {"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]}
    return dets


def test_perfect_detections_score_1_everywhere(test_set, capsys):
    m = coco_evaluate(test_set, _perfect(test_set))
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(1.0)
    assert set(m["per_class"]) == {"square", "circle", "triangle"}
    assert all(v == {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)} for v in m["per_class"].values())
    assert set(KEYS) <= set(m) and all(m[k] is None or 0.0 <= m[k] <= 1.0 for k in KEYS)
    assert capsys.readouterr().out == ""  # pycocotools' prints are captured
    coco_evaluate(test_set, _perfect(test_set), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_shifted_boxes_lose_the_strict_thresholds_first(test_set):
    perfect = _perfect(test_set)
    # a shift of a quarter of each box's width keeps IoU near 0.6: matched at .5, missed at .75
    shifted = {}
    for k, d in perfect.items():
        w = d["boxes"][:, 2] - d["boxes"][:, 0]
        shifted[k] = {**d, "boxes": d["boxes"] + torch.stack([w / 4, 0 * w, w / 4, 0 * w], 1)}
    m = coco_evaluate(test_set, shifted)
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == 0.0 and 0.0 < m["AP"] < 0.5


def test_wrong_labels_and_missed_images_lower_the_right_class(test_set):
    dets = _perfect(test_set)
    # call every square a circle
    wrong = {k: {**d, "labels": torch.where(d["labels"] == 1, 2, d["labels"])} for k, d in dets.items()}
    m = coco_evaluate(test_set, wrong)
    assert m["per_class"]["square"]["AP"] == 0.0 and m["per_class"]["triangle"]["AP"] == pytest.approx(1.0)
    assert m["per_class"]["circle"]["AP"] < 1.0 and m["AP"] < 0.7
    # nothing found on half the images: recall halves
    half = {k: d for k, d in dets.items() if k % 2}
    assert 0.2 < coco_evaluate(test_set, half)["AP50"] < 0.8


def test_no_detections_are_zeros_not_a_crash(test_set):
    for dets in ({}, {1: {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}}):
        m = coco_evaluate(test_set, dets)
        # 10-60 px objects: nothing in the large bucket (over 96x96 px) to score
        assert all(m[k] == 0.0 for k in KEYS if k != "APl") and m["APl"] is None
        assert m["per_class"] == {n: {"AP": 0.0, "AP50": 0.0} for n in ["square", "circle", "triangle"]}


def test_classes_without_ground_truth_are_left_out(tmp_path, test_set):
    data = json.loads(test_set.annotations.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 3]
    path = tmp_path / "no_triangles.json"
    path.write_text(json.dumps(data))
    ds = CocoDetection(test_set.images_dir, path)
    m = coco_evaluate(ds, _perfect(ds))
    assert set(m["per_class"]) == {"square", "circle"} and m["AP"] == pytest.approx(1.0)
    assert set(coco_evaluate(ds, {})["per_class"]) == {"square", "circle"}


def test_detections_the_set_cannot_have_are_data_errors(test_set):
    one = {"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "scores": torch.tensor([0.9])}
    with pytest.raises(DataError, match="image id 999"):
        coco_evaluate(test_set, {999: {**one, "labels": torch.tensor([1])}})
    with pytest.raises(DataError, match="label 0 is not one of the set's labels 1..3"):
        coco_evaluate(test_set, {1: {**one, "labels": torch.tensor([0])}})
    with pytest.raises(DataError, match="1 boxes, 1 scores and 2 labels"):
        coco_evaluate(test_set, {1: {**one, "labels": torch.tensor([1, 2])}})


def test_table_has_a_row_per_class_and_the_summary(test_set):
    m = coco_evaluate(test_set, _perfect(test_set))
    table = format_table(m, title="shapes")
    assert table.row_count == 4
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    for word in ("square", "circle", "triangle", "all", "100.0", "AP75 100.0", "shapes"):
        assert word in text


def test_an_empty_size_bucket_is_none_and_shown_as_n_a(test_set):
    # the shapes are 10-60 px: small and medium objects, no large ones (over 96x96 px)
    m = coco_evaluate(test_set, _perfect(test_set))
    assert m["APl"] is None and m["APm"] == pytest.approx(1.0) and m["APs"] == pytest.approx(1.0)
    console = Console(width=120, record=True)
    console.print(format_table(m))
    text = console.export_text()
    assert "APl n/a" in text and "APl 0.0" not in text and "APm 100.0" in text
