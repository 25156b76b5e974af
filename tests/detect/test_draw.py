"""Drawing detections: outlines in the class colour, labels, the score threshold, input kinds."""

import numpy as np
import pytest
import torch
from PIL import Image

from archc.detect.draw import PALETTE, class_colour, draw_detections
from archc.errors import DataError

BOX = torch.tensor([[10.0, 20.0, 40.0, 50.0]])


def test_the_outline_is_drawn_in_the_class_colour_and_the_inside_kept():
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    out = np.asarray(draw_detections(img, BOX, torch.tensor([2]), torch.tensor([0.9]), ["a", "b"]))
    colour = np.array(class_colour(2))
    # left, right and bottom edges at mid height / mid width carry the colour; the inside is untouched
    assert (out[35, 10] == colour).all() and (out[35, 40] == colour).all() and (out[50, 25] == colour).all()
    assert not out[35, 25].any() and not out[30:45, 15:35].any()
    # the label sits above the box in the same colour
    assert (out[9:20, 10:30] == colour).all(axis=2).mean() > 0.3
    assert not out[55:, :].any() and not out[:, 45:].any()


def test_weak_detections_are_not_drawn_and_the_input_is_not_changed():
    pic = Image.new("RGB", (64, 64), (5, 6, 7))
    before = np.asarray(pic).copy()
    weak = draw_detections(pic, BOX, torch.tensor([1]), torch.tensor([0.1]), ["a", "b"])
    assert (np.asarray(weak) == before).all()
    strong = draw_detections(pic, BOX, torch.tensor([1]), torch.tensor([0.1]), ["a", "b"], score_threshold=0.05)
    assert (np.asarray(strong) != before).any() and (np.asarray(pic) == before).all()


def test_colours_are_fixed_per_class_and_distinct():
    assert [class_colour(k) for k in range(1, 13)] == PALETTE
    many = [class_colour(k) for k in range(1, 81)]
    assert many == [class_colour(k) for k in range(1, 81)] and len(set(many)) == 80


def test_float_tensors_lists_and_odd_boxes():
    img = torch.full((3, 32, 48), 0.5)
    # corners given in the wrong order and a box leaving the image are still drawn
    out = draw_detections(img, [[30.0, 25.0, 5.0, 3.0], [40.0, 10.0, 90.0, 20.0]], [1, 3], [0.8, 0.7], ["a", "b", "c"])
    arr = np.asarray(out)
    assert out.size == (48, 32) and (arr[15, 5] == PALETTE[0]).all() and (arr[15, 47] == PALETTE[2]).all()
    assert (arr[15, 20] == 128).all()
    nothing = draw_detections(img, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), [])
    assert (np.asarray(nothing) == 128).all()


def test_bad_inputs_are_data_errors():
    with pytest.raises(DataError, match="shape"):
        draw_detections(torch.zeros(4, 8, 8), BOX, [1], [0.9], ["a"])
    with pytest.raises(DataError, match="1 boxes, 2 labels"):
        draw_detections(torch.zeros(3, 8, 8), BOX, [1, 1], [0.9], ["a"])
    with pytest.raises(DataError, match="ndarray"):
        draw_detections(np.zeros((8, 8, 3)), BOX, [1], [0.9], ["a"])


def test_labels_go_below_a_box_at_the_top_edge_and_stay_in_the_image():
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    top = torch.tensor([[40.0, 2.0, 62.0, 30.0]])  # no room above; the label is wider than the room right
    out = np.asarray(draw_detections(img, top, torch.tensor([1]), torch.tensor([0.9]), ["square"]))
    colour = np.array(class_colour(1))
    assert not out[5:28, 43:60].any()  # the inside of the box stays visible
    below = (out[32:42, :] == colour).all(axis=2)
    assert below.mean() > 0.1 and below[:, 63].any()  # under the box, clamped to the right edge


def test_small_images_are_enlarged_by_a_whole_factor():
    img = torch.zeros(3, 128, 96, dtype=torch.uint8)
    img[:, 60:70, 30:40] = 200  # a 10x10 object
    out = draw_detections(img, torch.tensor([[25.0, 55.0, 45.0, 75.0]]), [1], [0.9], ["a"], min_size=512)
    arr = np.asarray(out)
    assert out.size == (96 * 6, 128 * 6)  # ceil(512 / 96) = 6
    assert (arr[60 * 6 : 70 * 6, 30 * 6 : 40 * 6] == 200).all()  # the object, pixel for pixel
    assert (arr[65 * 6, 25 * 6] == PALETTE[0]).all() and (arr[65 * 6, 45 * 6] == PALETTE[0]).all()  # the box scaled
    label = (arr[55 * 6 - 11 : 55 * 6, 25 * 6 : 25 * 6 + 30] == PALETTE[0]).all(axis=2)
    assert label.mean() > 0.3  # above the box, 11 px tall against a 60 px object
    same = draw_detections(torch.zeros(3, 600, 800, dtype=torch.uint8), BOX, [1], [0.9], ["a"], min_size=512)
    assert same.size == (800, 600)
