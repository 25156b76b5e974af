"""upsample, the adaptive pools and avgpool's count_include_pad in the torch backend."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.errors import BackendError
from tests.backends.lower_check import TOL, interpreter_error, json_params, labels, net, onnx_error

RESAMPLE = """
net rs {
  input 3x6x6
  conv(3x3, 4)
  up: upsample(scale=2)
  upsample(size=8x8, mode=bilinear)
  pool: adaptive_maxpool(4)
  upsample(scale=2x3, mode=bilinear, align_corners=true)
  adaptive_avgpool(4x3)
  avgpool(3x3, /1, count_include_pad=false)
  flatten
  linear(2)
}
"""


def one_op(op: str, shape: str = "3x5x6") -> str:
    return f"net n {{\n  input {shape}\n  {op}\n}}\n"


@pytest.mark.parametrize(
    ("op", "kwargs"),
    [
        ("upsample(scale=2)", {"scale_factor": 2, "mode": "nearest"}),
        ("upsample(scale=3x2)", {"scale_factor": (3, 2), "mode": "nearest"}),
        ("upsample(size=7x9)", {"size": (7, 9), "mode": "nearest"}),
        ("upsample(scale=2, mode=bilinear)", {"scale_factor": 2, "mode": "bilinear", "align_corners": False}),
        (
            "u: upsample(size=4, mode=bilinear, align_corners=true)",
            {"size": 4, "mode": "bilinear", "align_corners": True},
        ),
    ],
)
def test_upsample_equals_interpolate(op: str, kwargs: dict) -> None:
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(net(one_op(op))(x), F.interpolate(x, **kwargs))


@pytest.mark.parametrize("label", ["", "p: "])
def test_adaptive_pools_equal_torch(label: str) -> None:
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(net(one_op(f"{label}adaptive_avgpool(3x2)"))(x), F.adaptive_avg_pool2d(x, (3, 2)))
    torch.testing.assert_close(net(one_op(f"{label}adaptive_maxpool(4)"))(x), F.adaptive_max_pool2d(x, 4))


def test_generated_code() -> None:
    src = archc.compile(RESAMPLE).archc_source
    assert "self.up = nn.Upsample(scale_factor=2, mode='nearest')" in src
    assert "F.interpolate(up, size=8, mode='bilinear', align_corners=False)" in src
    assert "self.pool = nn.AdaptiveMaxPool2d(4)" in src
    assert "F.adaptive_avg_pool2d(upsample_1, (4, 3))" in src
    assert "F.avg_pool2d(adaptive_avgpool, 3, 1, 1, count_include_pad=False)" in src


def test_avgpool_count_include_pad() -> None:
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    for label in ("", "a: "):
        m = net(one_op(f"{label}avgpool(3x3, /1, count_include_pad=false)"))
        torch.testing.assert_close(m(x), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    default = archc.compile(one_op("avgpool(3x3, /1)"))
    assert "count_include_pad" not in default.archc_source  # torch's default is not written
    torch.testing.assert_close(default(x.float()), F.avg_pool2d(x.float(), 3, 1, 1))


def test_adaptive_maxpool_that_onnx_cannot_express_is_refused_on_export() -> None:
    text = one_op("adaptive_maxpool(4)", "3x10x10")
    with pytest.raises(BackendError, match=r"pools 10x10 to 4x4, which ONNX cannot express") as e:
        archc.compile(text, backend="onnxruntime", mode="eval")
    assert "<spec>:3:3" in str(e.value)


def test_labels_params_and_onnx(tmp_path) -> None:
    got = labels(RESAMPLE)
    assert got["up"] == "upsample x2, nearest" and got["upsample"] == "upsample to 8x8, bilinear"
    assert got["upsample_1"] == "upsample x2x3, bilinear, align corners"
    assert got["pool"] == "adaptive max pool, 4x4" and got["adaptive_avgpool"] == "adaptive avg pool, 4x3"
    assert json_params(RESAMPLE, tmp_path) == 4 * 3 * 9 + 4 * 12 * 2 + 2  # conv, linear
    # the legacy exporter cannot see a map's size after a Resize (it refuses the adaptive pool after it)
    assert onnx_error(RESAMPLE, exporter="dynamo") <= TOL


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_ir_interpreter_agrees(mode: str) -> None:
    assert interpreter_error(RESAMPLE, mode, (3, 6, 6)) < 1e-10
