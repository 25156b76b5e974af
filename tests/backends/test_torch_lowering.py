"""Torch backend: module names follow the spec, odd names work, reserved names are refused."""

from __future__ import annotations

import pytest
import torch

import archc
from archc.errors import BackendError

SPEC = """
net odd(input_size=2x8x8) {
  input input_size
  conv(3x3, 4)
  class: conv(3x3, 4)
  7: bn
  act: relu
  relu
  head: pool_and_fc(3)
}
block pool_and_fc(n) {
  avgpool
  flatten
  fc: linear(n)
}
"""


def test_names_become_module_and_state_dict_names() -> None:
    # without the fusion passes, which absorb param-free layers such as `act` into their producer
    m = archc.build(SPEC, passes=["dce"]).module
    keys = list(m.state_dict())
    assert keys[:2] == ["conv.weight", "class.weight"]
    assert "7.running_mean" in keys and "head.fc.weight" in keys
    assert isinstance(m.get_submodule("act"), torch.nn.ReLU)  # named param-free layers get modules
    assert not any(k.startswith("relu") for k, _ in m.named_modules())  # unnamed ones are calls
    assert m(torch.randn(2, 2, 8, 8)).shape == (2, 3)


def test_reserved_names_are_refused() -> None:
    spec = "net n() {\n  input 2x8x8\n  training: conv(3x3, 4)\n}\n"
    with pytest.raises(BackendError, match="'training'.*reserved") as e:
        archc.compile(spec)
    assert "<spec>:3:13" in e.value.message


def test_forward_frees_values_after_their_last_use() -> None:
    src = archc.compile("specs/cifar/resnet20.arch").archc_source
    assert "del " in src
    assert "return fc" in src


def test_module_is_trainable_end_to_end() -> None:
    torch.manual_seed(0)
    m = archc.compile("specs/cifar/resnet20.arch")
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_state_dict_order_follows_the_spec_after_fusion() -> None:
    from archc.bench.reference import resnet

    # fuse_train moves layer1.0.bn3 after the downsample branch in the forward's order;
    # the modules still register in statement order, like torchvision's
    keys = list(archc.compile("specs/resnet50.arch").state_dict())
    assert keys == list(resnet(50).state_dict())
