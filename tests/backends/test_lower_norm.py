"""layer_norm, group_norm and layer_scale in the torch backend: torch references, keys, labels, ONNX."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import archc
from archc.errors import BackendError
from tests.backends.lower_check import TOL, interpreter_error, json_params, labels, net, onnx_error

NORMS = """
block cn(c) {
  conv(3x3, c, groups=c)
  layer_norm
  conv(1x1, c)
  layer_scale(1e-6)
  add
}
net norms {
  input 8x6x6
  gn: group_norm(4, eps=1e-3)
  b: cn(8)
  ln: layer_norm(eps=1e-5)
  avgpool
  flatten
  fc_norm: layer_norm
  ls: layer_scale(0.5)
  linear(3)
}
"""


def test_layer_norm_of_a_map_is_layer_norm_over_channels() -> None:
    m = net("net n {\n  input 8x5x7\n  ln: layer_norm(eps=1e-5)\n}\n")
    x = torch.randn(3, 8, 5, 7, dtype=torch.float64)
    ln = m.ln
    want = F.layer_norm(x.permute(0, 2, 3, 1), (8,), ln.weight, ln.bias, 1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(m(x), want)
    assert list(m.state_dict()) == ["ln.weight", "ln.bias"]


def test_layer_norm_of_a_vector() -> None:
    m = net("net n {\n  input 12\n  ln: layer_norm\n}\n")
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(m(x), F.layer_norm(x, (12,), m.ln.weight, m.ln.bias, 1e-6))
    assert m.ln.eps == 1e-6


def test_group_norm_equals_torch_and_trains_on_a_channels_last_input() -> None:
    text = "net n {\n  input 8x5x5\n  gn: group_norm(4, eps=1e-3)\n  conv(1x1, 4)\n}\n"
    m = net(text)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    want = m.conv(F.group_norm(x, 4, m.gn.weight, m.gn.bias, 1e-3))
    torch.testing.assert_close(m(x), want)
    # the net's input (no gradient) goes channels-last here; the lowering keeps torch's CPU GroupNorm
    # backward off that input, where it crashes the process (see lower_norm.group_norm): so in a child
    assert "channels_last" in archc.compile(text).archc_source
    code = (
        "import torch, archc\n"
        f"m = archc.compile({text!r}, mode='train')\n"
        "m(torch.randn(2, 8, 5, 5)).sum().backward()\n"
        "assert m.gn.weight.grad is not None\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_layer_scale_is_a_parameter_of_its_scope() -> None:
    m = net(NORMS)
    sd = m.state_dict()
    assert sd["b.layer_scale"].shape == (8, 1, 1) and sd["ls"].shape == (8,)
    assert "b.layer_scale.weight" not in sd
    fresh = archc.compile(NORMS)
    assert torch.equal(fresh.b.layer_scale, torch.full((8, 1, 1), 1e-6))
    assert isinstance(fresh.b.layer_scale, torch.nn.Parameter)
    m = net("net n {\n  input 3x2x2\n  layer_scale(2)\n}\n")
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(m(x), m.layer_scale * x)
    assert "self.layer_scale * x" in m.archc_source


def test_whole_net_matches_a_hand_written_reference() -> None:
    m = net(NORMS).eval()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)

    def ln2d(mod, t):
        return F.layer_norm(t.permute(0, 2, 3, 1), (t.shape[1],), mod.weight, mod.bias, mod.eps).permute(0, 3, 1, 2)

    h = F.group_norm(x, 4, m.gn.weight, m.gn.bias, 1e-3)
    branch = m.b.conv_1(ln2d(m.b.layer_norm, m.b.conv(h)))
    h = m.b.layer_scale * branch + h
    h = ln2d(m.ln, h).mean((2, 3))
    h = F.layer_norm(h, (8,), m.fc_norm.weight, m.fc_norm.bias, 1e-6) * m.ls
    torch.testing.assert_close(m(x), m.linear(h))


def test_integer_label_cannot_name_a_layer_scale() -> None:
    with pytest.raises(BackendError, match="needs a name that is a Python identifier"):
        archc.compile("net n {\n  input 4x2x2\n  0: layer_scale\n}\n")


def test_labels_params_and_onnx(tmp_path) -> None:
    got = labels(NORMS)
    assert got["gn"] == "group norm, 4" and got["b.layer_norm"] == "layer norm"
    assert got["b.layer_scale"] == "layer scale"
    # gn 16, b: dw conv 72 + ln 16 + 1x1 conv 64 + scale 8, ln 16, fc_norm 16, ls 8, linear 27
    assert json_params(NORMS, tmp_path) == 16 + 72 + 16 + 64 + 8 + 16 + 16 + 8 + 27
    assert onnx_error(NORMS) <= TOL


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_ir_interpreter_agrees(mode: str) -> None:
    assert interpreter_error(NORMS, mode, (8, 6, 6)) < 1e-10
