"""MobileNetV2 and MobileNetV3-Large: exact counts, torchvision's keys, float64 equivalence, eval pipeline."""

from __future__ import annotations

import pytest

import archc
from tests.zoo import reference_mobile as ref
from tests.zoo.mobile_checks import SMALL, equivalence_error, params, pipeline_error, shapes

V2 = "zoo/mobilenet_v2"


def test_mobilenet_v2_params():
    assert params(V2) == 3_504_872  # torchvision mobilenet_v2's num_params


def test_mobilenet_v2_keys_are_torchvision_s():
    assert shapes(archc.compile(V2)) == shapes(ref.MobileNetV2())


@pytest.mark.parametrize("train", [False, True])
def test_mobilenet_v2_float64_equivalence(train):
    assert equivalence_error(V2, ref.MobileNetV2(num_classes=10, dropout=0.0), train, {"dropout": 0.0}) < 1e-10


def test_mobilenet_v2_eval_pipeline():
    assert pipeline_error(V2) < 1e-4


def test_mobilenet_v2_num_classes_override():
    assert archc.api.build(V2, lower=False, overrides=SMALL).graph.params() == 3_504_872 - 1281 * 990


V3 = "zoo/mobilenet_v3_large"


def test_mobilenet_v3_large_params():
    assert params(V3) == 5_483_032  # torchvision mobilenet_v3_large's num_params


def test_mobilenet_v3_large_keys_are_torchvision_s():
    assert shapes(archc.compile(V3)) == shapes(ref.MobileNetV3Large())


@pytest.mark.parametrize("train", [False, True])
def test_mobilenet_v3_large_float64_equivalence(train):
    assert equivalence_error(V3, ref.MobileNetV3Large(num_classes=10, dropout=0.0), train, {"dropout": 0.0}) < 1e-10


def test_mobilenet_v3_large_eval_pipeline():
    assert pipeline_error(V3) < 1e-4
