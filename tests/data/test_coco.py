"""The COCO reader, the --data strings and detection batches (resize, flip, padding, determinism)."""

import json
import shutil

import pytest
import torch

from archc.data.coco import CocoDetection, detection_batches, open_detection_data
from archc.data.shapes import SHAPE_MIN_LEVEL, write_shapes
from archc.errors import DataError


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco") / "train"
    ann = write_shapes(root, 8, seed=7, size=96)
    return CocoDetection(root, ann)


def _custom(tmp_path, annotations, categories=None):
    """A two-image COCO set (copied shapes images) with the given annotations."""
    src = tmp_path / "src"
    write_shapes(src, 2, seed=1, size=64)
    images = tmp_path / "images"
    shutil.copytree(src, images)
    data = {
        "images": [
            {"id": 10, "file_name": "000000.png", "width": 64, "height": 64},
            {"id": 20, "file_name": "000001.png", "width": 64, "height": 64},
        ],
        "annotations": annotations,
        "categories": categories or [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
    }
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(data))
    return images, path


def test_items_are_uint8_images_with_xyxy_targets(shapes_set):
    raw = json.loads(shapes_set.annotations.read_text())
    img, t = shapes_set[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 96, 96)
    assert t["image_id"] == 1 and t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    first = [a for a in raw["annotations"] if a["image_id"] == 1]
    x, y, w, h = first[0]["bbox"]
    assert t["boxes"][0].tolist() == [x, y, x + w, y + h]
    assert t["labels"].tolist() == [a["category_id"] for a in first]
    assert len(shapes_set) == 8 and shapes_set.class_names == ["square", "circle", "triangle"]
    assert shapes_set.label_to_cat_id == {1: 1, 2: 2, 3: 3}


def test_category_ids_map_to_contiguous_labels_crowd_and_degenerate_boxes_left_out(tmp_path):
    anns = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 20], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [5, 5, 8, 8]},
        {"id": 3, "image_id": 10, "category_id": 3, "bbox": [0, 0, 30, 30], "iscrowd": 1},
        {"id": 4, "image_id": 20, "category_id": 7, "bbox": [4, 4, 0, 9], "iscrowd": 0},
        {"id": 5, "image_id": 20, "category_id": 3, "bbox": [50, 60, 30, 30], "iscrowd": 0},
        {"id": 6, "image_id": 20, "category_id": 7, "bbox": [70, 70, 5, 5], "iscrowd": 0},
    ]
    images, path = _custom(tmp_path, anns)
    ds = CocoDetection(images, path)
    assert ds.class_names == ["dog", "cat"]  # in category-id order: 3 -> label 1, 7 -> label 2
    assert ds.label_to_cat_id == {1: 3, 2: 7} and ds.cat_to_label == {3: 1, 7: 2}
    _, t = ds[0]
    assert t["labels"].tolist() == [2, 1] and t["image_id"] == 10  # the crowd box is not a target
    assert t["boxes"].tolist() == [[1, 2, 11, 22], [5, 5, 13, 13]]
    _, t = ds[1]
    # the zero-width box and the one outside the image are dropped; the one across the edge is clipped
    assert t["boxes"].tolist() == [[50, 60, 64, 64]] and t["labels"].tolist() == [1]
    gt = ds.ground_truth()
    assert len(gt["annotations"]) == 6 and sum(a["iscrowd"] for a in gt["annotations"]) == 1
    assert gt["annotations"][1]["area"] == 64.0  # filled in where the file has none


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"category_id": 99}, "unknown category 99"),
        ({"image_id": 5}, "unknown image 5"),
        ({"bbox": [1, 2, -3, 4]}, "bad bbox"),
        ({"bbox": [1, 2, 3]}, "bad bbox"),
        ({"bbox": "x"}, "malformed"),
    ],
)
def test_bad_annotations_are_data_errors_naming_the_file(tmp_path, change, message):
    ann = {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 20], "iscrowd": 0} | change
    images, path = _custom(tmp_path, [ann])
    with pytest.raises(DataError, match=message) as err:
        CocoDetection(images, path)
    assert "custom.json" in str(err.value) and err.value.hint


def test_missing_and_invalid_files_are_data_errors(tmp_path, shapes_set):
    with pytest.raises(DataError, match="annotations not found: .*none.json"):
        CocoDetection(tmp_path, tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json is not COCO detection JSON"):
        CocoDetection(tmp_path, bad)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="bad.json is not COCO"):
        CocoDetection(tmp_path, bad)
    with pytest.raises(DataError, match="image folder not found"):
        CocoDetection(tmp_path / "nowhere", shapes_set.annotations)
    missing = CocoDetection(tmp_path, shapes_set.annotations)
    with pytest.raises(DataError, match="cannot read image .*000000.png") as err:
        missing[0]
    assert "annotations.json" in err.value.hint


def test_an_image_of_another_size_than_the_json_says_is_refused(tmp_path):
    images, path = _custom(tmp_path, [])
    data = json.loads(path.read_text())
    data["images"][0]["width"] = 65
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="000000.png is 64x64, .* says 65x64"):
        CocoDetection(images, path)[0]


def test_data_strings(shapes_set, tmp_path):
    d, a = shapes_set.images_dir, shapes_set.annotations
    one = open_detection_data(f"coco:{d},{a}")
    assert len(one.train) == len(one.test) == 8 and one.num_classes == 3 and one.name == f"coco:{d},{a}"
    other = tmp_path / "test"
    write_shapes(other, 3, seed=9, size=64)
    two = open_detection_data(f"coco:{d},{a};{other},{other / 'annotations.json'}")
    assert (len(two.train), len(two.test)) == (8, 3) and two.class_names == ["square", "circle", "triangle"]
    gen = open_detection_data("shapes:4,2", root=tmp_path / "cache")
    assert (len(gen.train), len(gen.test)) == (4, 2)
    assert (tmp_path / "cache" / "shapes-4-2" / "manifest.json").is_file()
    for spec, message in [
        (f"coco:{d}", "IMAGES_DIR,ANNOTATIONS"),
        (f"coco:{d},{a};{d},{a};{d},{a}", "one or two"),
        ("shapes:4", "two numbers"),
        ("shapes:0,2", "at least one"),
        ("voc:/x", "unknown detection data"),
    ]:
        with pytest.raises(DataError, match=message):
            open_detection_data(spec, root=tmp_path / "cache")


def test_train_and_test_sets_need_the_same_categories(tmp_path, shapes_set):
    images, path = _custom(tmp_path, [])
    with pytest.raises(DataError, match="other categories"):
        open_detection_data(f"coco:{shapes_set.images_dir},{shapes_set.annotations};{images},{path}")


def _batch(ds, seed, **kw):
    args = {"min_size": 80, "max_size": None, "flip": True, "mean": torch.tensor([0.1, 0.2, 0.3])} | kw
    return detection_batches(ds, [0, 1, 2, 3, 4], generator=torch.Generator().manual_seed(seed), **args)


def test_batches_resize_pad_and_normalise(shapes_set):
    mean, std = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.25, 2.0])
    x, sizes, targets, scales = _batch(shapes_set, 0, flip=False, min_size=100, std=std)
    assert x.shape == (5, 3, 112, 112) and sizes == [(100, 100)] * 5 and scales == [pytest.approx(100 / 96)] * 5
    assert x[:, :, 100:].abs().max() == 0 and x[:, :, :, 100:].abs().max() == 0  # zero padding
    img, t = shapes_set[0]
    assert torch.allclose(targets[0]["boxes"], t["boxes"] * 100 / 96)
    assert targets[0]["image_id"] == t["image_id"] and torch.equal(targets[0]["labels"], t["labels"])
    raw = detection_batches(
        shapes_set, [0], min_size=None, max_size=None, flip=False, generator=torch.Generator(), mean=mean, std=std
    )
    assert raw[0].shape == (1, 3, 96, 96) and raw[3] == [1.0]
    expected = (img.float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(raw[0][0], expected)
    # the longer side is capped: 96 -> shorter side 600 would be 600 wide, max_size 160 caps it
    capped = _batch(shapes_set, 0, min_size=600, max_size=160)
    assert capped[1] == [(160, 160)] * 5 and capped[0].shape[-1] == 160


def test_flips_keep_boxes_on_their_shapes_and_depend_only_on_the_generator(shapes_set):
    mean = torch.tensor([0.1, 0.2, 0.3])
    x, _, targets, _ = _batch(shapes_set, 1)
    again = _batch(shapes_set, 1)
    assert torch.equal(again[0], x) and all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(again[2], targets))
    plain = _batch(shapes_set, 1, flip=False)
    flipped = [not torch.equal(plain[0][k], x[k]) for k in range(5)]
    # one uniform draw per image decides its flip: seed 1 flips images 1, 2 and 4
    assert flipped == (torch.rand(5, generator=torch.Generator().manual_seed(1)) < 0.5).tolist()
    assert flipped == [False, True, True, False, True]
    for k in range(5):
        img = x[k, :, :80, :80] + mean[:, None, None]
        w = 80
        for (x1, y1, x2, y2), (p1, q1, p2, q2) in zip(targets[k]["boxes"].tolist(), plain[2][k]["boxes"].tolist()):
            if flipped[k]:
                assert (x1, x2) == pytest.approx((w - p2, w - p1)) and (y1, y2) == (q1, q2)
            # every box still frames its bright shape: most of the box is shape, its border rows and columns too
            bright = img.amin(0) > (SHAPE_MIN_LEVEL - 10) / 255
            r = bright[round(y1) : round(y2), round(x1) : round(x2)]
            assert r.float().mean() > 0.3 and r[:, :2].any() and r[:, -2:].any() and r[-2:].any()
        # the image content moved with the flip
        if flipped[k]:
            assert torch.allclose(x[k, :, :80, :80], plain[0][k, :, :80, :80].flip(-1))
