"""archc.ir.Interpreter: reference F ops on the IR agree with the torch backend's module, node for node."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from archc.api import build, load_weights
from archc.errors import BackendError
from archc.ir import Interpreter

ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-10

PREACT = """
block unit(width, stride=1) {
  bn1: bn
  relu
  conv1: conv(3x3, width, /stride)
  bn2: bn
  relu
  conv2: conv(3x3, width)
  if stride != 1 or in_channels != width {
    add { shortcut: conv(1x1, width, /stride) }
  } else {
    add
  }
}
net preact(input_size=3x16x16) {
  input input_size
  conv1: conv(3x3, 8)
  a: unit(8)
  b: unit(16, stride=2)
  bn: bn
  relu
  pool: maxpool(3x3, /2, ceil_mode=true)
  avgpool: avgpool
  flatten
  fc: linear(5)
}
"""

# (spec, overrides, part, frozen_bn): option A (resnet20, plain20), option B with a max-pooled stem
# (resnet18), option C, a pre-activation net with maxpool and projection shortcuts, a detection trunk
# with frozen BN and the full detector net with its `output res4` tap (two outputs, a dict).
NETS = {
    "resnet20": ("specs/cifar/resnet20.arch", {"input_size": "3x32x32"}, None, False),
    "plain20": ("specs/cifar/plain20.arch", {"input_size": "3x16x16"}, None, False),
    "resnet18": ("specs/resnet18.arch", {"input_size": "3x64x64"}, None, False),
    "resnet18_C": ("specs/resnet18.arch", {"input_size": "3x32x32", "shortcut": "C"}, None, False),
    "preact": (PREACT, {}, None, False),
    "rcnn_trunk_frozen": ("specs/detection/faster_rcnn_small_c4.arch", {"input_size": "3x64x64"}, "trunk", True),
    "rcnn_outputs": ("specs/detection/faster_rcnn_small_c4.arch", {"input_size": "3x64x64"}, None, False),
}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def _random_state(graph: Any, module: Any, seed: int) -> dict[str, Any]:
    """The module's float64 state with random BN affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    state = {k: v.double() if v.is_floating_point() else v for k, v in module.state_dict().items()}
    for n in graph.nodes():
        if n.op in ("bn", "bn_act", "frozen_bn"):
            for key, v in (("weight", 0.5), ("running_var", 0.5), ("bias", None), ("running_mean", None)):
                shape = state[f"{n.name}.{key}"].shape
                state[f"{n.name}.{key}"] = (
                    v + torch.rand(shape, generator=g, dtype=torch.float64)
                    if v
                    else 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)
                )
    return state


def _compiled(name: str, mode: str, state: dict[str, Any] | None = None) -> tuple[Any, Any]:
    spec, overrides, part, frozen = NETS[name]
    b = build(spec, mode=mode, overrides=overrides, part=part, frozen_bn=frozen)
    module = b.module.double()
    if state is not None:
        load_weights(module, state, b.graph)
    return b.graph, module


def _close(got: Any, want: Any) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        for k in want:
            _close(got[k], want[k])
        return
    assert got.dtype == torch.float64 and got.shape == want.shape
    assert (got - want).abs().max().item() < ATOL * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("name", list(NETS))
def test_interpreter_matches_the_torch_backend(name: str) -> None:
    graph, train_module = _compiled(name, "train")
    state = _random_state(graph, train_module, seed=1)
    train_module.load_state_dict(state)
    shape = tuple(graph.input.shape)
    x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    # the train pipeline's graph (bn_act), eval mode: running statistics
    with torch.no_grad():
        want = train_module.eval()(x)
    # a copy: the module's train-mode forward below updates its own running statistics
    interp = Interpreter(graph, {k: v.clone() for k, v in train_module.state_dict().items()})
    _close(interp.run(x), want)

    # ... and train mode: batch statistics (frozen BN keeps its running ones); params left as they were
    before = {k: v.clone() for k, v in interp.params.items()}
    with torch.no_grad():
        want_train = train_module.train()(x)
    _close(interp.run(x, train=True), want_train)
    assert all(torch.equal(before[k], v) for k, v in interp.params.items())

    # the eval pipeline's graph (BN folded into fused_conv) with its own folded state_dict
    eval_graph, eval_module = _compiled(name, "eval", state)
    assert any(n.op == "fused_conv" for n in eval_graph.nodes())
    with torch.no_grad():
        got_eval = Interpreter(eval_graph, eval_module.state_dict()).run(x)
        _close(got_eval, eval_module.eval()(x))
    # folding changed no function: the folded graph gives the unfolded graph's output
    _close(got_eval, want)


def test_train_mode_differs_from_eval_mode() -> None:
    """Batch statistics are really used: the two modes give different outputs."""
    graph, module = _compiled("resnet20", "train")
    interp = Interpreter(graph, _random_state(graph, module, seed=2))
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    assert (interp.run(x, train=True) - interp.run(x)).abs().max().item() > 1e-3


def test_every_registered_op_has_a_method() -> None:
    """A new op in the registry needs its reference here too (archc bench checks outputs with it)."""
    from archc.ir import OPS

    missing = [op for op in OPS if not callable(getattr(Interpreter, op, None))]
    assert not missing, f"archc.ir.Interpreter has no method for {missing}"


def test_unknown_op_is_a_located_error() -> None:
    graph, module = _compiled("resnet20", "train")
    node = next(n for n in graph.nodes() if n.op == "bn_act")
    node.op = "swish"  # an op the interpreter has no method for
    with pytest.raises(BackendError) as info:
        Interpreter(graph, module.state_dict()).run(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    message = info.value.message
    assert "no op 'swish'" in message and node.name in message
    assert node.loc and node.loc in message and ".arch:" in node.loc


def test_missing_parameter_is_named() -> None:
    graph, module = _compiled("plain20", "train")
    state = dict(module.state_dict())
    del state["conv1.weight"]
    where = r"no parameter 'conv1.weight' for layer 'conv1' \(conv, at .*\.arch:\d+:\d+\)"
    with pytest.raises(BackendError, match=where):
        Interpreter(graph, state).run(torch.randn(1, 3, 16, 16, dtype=torch.float64))


def test_import_stays_light() -> None:
    code = "import sys, archc.ir; archc.ir.Interpreter; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
