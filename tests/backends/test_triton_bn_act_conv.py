"""The BN-act-conv unit (archc_triton.bn_act_conv_unit) against BatchNorm2d -> activation -> Conv2d.

float64 runs the unit's autograd Function on bn_torch (the kernels' torch twin): the same
saved tensors and recompute as the kernel path, compared at rounding error; float32 runs
the Triton kernels in the CPU interpreter.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

_before = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
try:
    import triton  # noqa: F401  (a test dependency: a missing one must fail, not skip)

    import archc
    from archc.bench.reference import randomise
    from archc_triton.bn_act import BNAct
    from archc_triton.bn_act_conv import bn_act_conv_unit
    from tests.backends.test_triton_bn_act import ACT_IDS, ACTS, act_reference
finally:
    if _before is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = _before

SPECS = Path(__file__).resolve().parents[2] / "specs"
F64 = {"rtol": 1e-10, "atol": 1e-10}
F32 = {"rtol": 1e-4, "atol": 1e-4}

# (cin, cout, kernel, stride, padding, groups, bias)
CONVS = {
    "3x3": (6, 10, 3, 1, 1, 1, False),
    "1x1": (6, 10, 1, 1, 0, 1, False),
    "3x3/2-grouped-bias": (6, 9, 3, 2, 1, 3, True),
}


@pytest.fixture(autouse=True)
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _modules(
    name: str, dtype: torch.dtype, seed: int = 0, act: tuple[str, dict] = ("relu", {})
) -> tuple[BNAct, nn.Conv2d, nn.BatchNorm2d, nn.Conv2d]:
    """(BNAct with activation `act`, conv) for the unit and (BatchNorm2d, conv) for the plain chain,
    with the same weights."""
    cin, cout, k, s, p, g, bias = CONVS[name]
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(cin)
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, groups=g, bias=bias)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    unit_bn = BNAct(cin, act=act[0], **act[1])
    unit_bn.load_state_dict(bn.state_dict())
    unit_conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, groups=g, bias=bias)
    unit_conv.load_state_dict(conv.state_dict())
    return unit_bn.to(dtype), unit_conv.to(dtype), bn.to(dtype), conv.to(dtype)


def _run(
    bn: nn.Module, conv: nn.Conv2d, x: torch.Tensor, dy_seed: int, unit: bool, act=torch.relu
) -> list[torch.Tensor]:
    """Forward and backward: [y, dx, dgamma, dbeta, dW, (db), running_mean, running_var]; `act`
    is the plain chain's activation (the unit applies its BNAct's)."""
    x = x.detach().clone().requires_grad_()
    y = bn_act_conv_unit(x, bn, conv) if unit else conv(act(bn(x)))
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(dy_seed), dtype=y.dtype)
    y.backward(dy)
    out = [y.detach(), x.grad, bn.weight.grad, bn.bias.grad, conv.weight.grad]
    if conv.bias is not None:
        out.append(conv.bias.grad)
    return out + [bn.running_mean.clone(), bn.running_var.clone()]


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_float64_gradients_equal_the_plain_chain(name: str, train: bool) -> None:
    ub, uc, bn, conv = _modules(name, torch.float64)
    for m in (ub, bn):
        m.train(train)
    x = (torch.randn(3, CONVS[name][0], 7, 6, dtype=torch.float64) * 2 + 0.3).contiguous(
        memory_format=torch.channels_last
    )
    for step in range(2):  # the second step sees the running statistics the first one updated
        got, want = _run(ub, uc, x, step, unit=True), _run(bn, conv, x, step, unit=False)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, **F64)
        for m in (ub, uc, bn, conv):
            m.zero_grad()
    assert int(ub.num_batches_tracked) == int(bn.num_batches_tracked) == (2 if train else 0)
    assert ub.dispatch_counts() == {"dtype float64": 2}


@pytest.mark.parametrize("name", ["3x3", "1x1"])
def test_float32_kernels_match_the_plain_chain(name: str) -> None:
    ub, uc, bn, conv = _modules(name, torch.float32)
    x = torch.randn(2, CONVS[name][0], 5, 5) * 2 + 0.3
    got, want = _run(ub, uc, x, 0, unit=True), _run(bn, conv, x, 0, unit=False)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **F32)
    assert ub.dispatch_counts() == {"kernel": 1}


@pytest.mark.parametrize(("act", "kw"), ACTS, ids=ACT_IDS)
def test_every_activation_matches_the_plain_chain(act: str, kw: dict) -> None:
    """float32 on the kernels and float64 on bn_torch (the same Function) against BN -> act -> conv."""
    for dtype, tol in ((torch.float32, F32), (torch.float64, F64)):
        ub, uc, bn, conv = _modules("3x3", dtype, seed=3, act=(act, kw))
        x = torch.randn(2, 6, 5, 4, dtype=dtype, generator=torch.Generator().manual_seed(4)) * 2 + 0.3
        got = _run(ub, uc, x, 0, unit=True)
        want = _run(bn, conv, x, 0, unit=False, act=act_reference(act, kw))
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, **tol)
        assert ub.dispatch_counts() == ({"kernel": 1} if dtype == torch.float32 else {"dtype float64": 1})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saves_the_bn_input_not_the_activation(dtype: torch.dtype) -> None:
    """Feature-map-sized saved tensors: the unit keeps x alone; the plain chain keeps x and relu(bn(x))."""
    ub, uc, bn, conv = _modules("3x3", dtype)
    x = torch.randn(2, 6, 5, 5, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()

    def saved_maps(fn) -> list[torch.Tensor]:
        saved: list[torch.Tensor] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            fn()
        return [t for t in saved if t.numel() == x.numel()]

    unit = saved_maps(lambda: bn_act_conv_unit(x, ub, uc))
    assert [t.data_ptr() for t in unit] == [x.data_ptr()]
    plain = {t.data_ptr() for t in saved_maps(lambda: conv(torch.relu(bn(x))))}
    assert len(plain) == 2 and x.data_ptr() in plain  # BN's input and the ReLU output (saved by ReLU and conv)


def test_autocast_bf16_runs_the_conv_in_bf16() -> None:
    ub, uc, bn, conv = _modules("1x1", torch.float32)
    x = (torch.randn(2, 6, 5, 5) * 2 + 0.3).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bn_act_conv_unit(x, ub, uc)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert uc.weight.grad.dtype == torch.float32 and ub.weight.grad.dtype == torch.float32
    want = conv(torch.relu(bn(x.detach().float())))
    torch.testing.assert_close(y.float(), want, rtol=3e-2, atol=3e-2 * want.abs().max().item())
    assert ub.dispatch_counts() == {"kernel": 1}


def test_lowering_uses_the_unit_only_for_bn_act_read_by_one_conv() -> None:
    b = archc.build(SPECS / "resnet50.arch", backend="triton", overrides={"input_size": "3x32x32"})
    src = b.module.archc_source
    assert src.count("archc_triton.bn_act_conv_unit(") == 32  # bn1 -> conv2, bn2 -> conv3 in 16 bottlenecks
    assert "archc_triton.bn_act_conv_unit(layer1_0_bn1, getattr(self.layer1, '0').bn1, " in src
    assert "self.bn1(conv1)" in src  # the stem's BN+ReLU feeds the max pool: a plain BNAct


@pytest.mark.parametrize(
    "spec, overrides",
    [
        ("cifar/resnet20.arch", {"input_size": "3x8x8"}),
        ("resnet50.arch", {"input_size": "3x32x32", "num_classes": 10}),
    ],
)
def test_float64_train_step_equals_the_torch_backend(spec: str, overrides: dict) -> None:
    """A whole net with the units, in float64: loss, every gradient and every statistic to rounding error."""
    torch.manual_seed(0)
    ref = archc.compile(SPECS / spec, backend="torch", mode="train", overrides=overrides).double()
    randomise(ref, seed=5)
    net = archc.compile(SPECS / spec, backend="triton", mode="train", overrides=overrides, weights=ref.state_dict())
    net.double()
    assert "archc_triton.bn_act_conv_unit(" in net.archc_source
    shape = [int(v) for v in overrides["input_size"].split("x")]
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 3, 5, 9])
    for model in (ref, net):
        nn.functional.cross_entropy(model(x), target).backward()
    # float64 through 50 layers in another summation order: agreement to 1e-9 of each tensor's
    # largest entry (measured: 4e-11 at worst); float32 would be off by about 1e-6
    grads = dict(ref.named_parameters())
    for name, p in net.named_parameters():
        _close_to_scale(p.grad, grads[name].grad, name)
    theirs = ref.state_dict()
    for key, value in net.state_dict().items():
        _close_to_scale(value, theirs[key], key)


def _close_to_scale(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    err = (a.double() - b.double()).abs().max().item()
    assert err <= 1e-9 * max(b.double().abs().max().item(), 1e-30), (what, err)


# MobileNetV2/V3 and EfficientNet blocks as the zoo specs use them: hardswish, relu6 and silu
# BN+activations (BNAct, residual or not, and units), SE branches (relu, hardsigmoid, sigmoid)
MOBILE = """
use "{blocks}"

net mobile_acts(num_classes=10, input_size=3x16x16) {{
  input input_size
  features: {{
    0: conv_bn_act(16, 3x3, /2, act=hardswish)
    1: inverted_residual(16, t=2)
    2: bneck(16, hidden=32, kernel=3x3, stride=1, se=true, act=hardswish)
    3: mbconv(24, t=2, kernel=3x3, stride=2)
    4: conv_bn_act(32, act=silu)
  }}
  avgpool
  flatten
  classifier: linear(num_classes)
}}
"""


def test_mobile_blocks_train_and_eval_equal_the_torch_backend(tmp_path: Path) -> None:
    """float32 train step (outputs, every gradient and statistic) and eval run of a net of the zoo's
    mobile blocks: the triton backend runs every BN+activation in its kernels, none in the torch form."""
    from archc.bench.dispatch import dispatch_counts, fallbacks
    from archc_triton.conv import FusedConv

    spec = tmp_path / "mobile_acts.arch"
    spec.write_text(MOBILE.format(blocks=(SPECS / "blocks" / "mobilenet.arch").as_posix()))
    torch.manual_seed(0)
    ref = archc.compile(spec, backend="torch", mode="train")
    net = archc.compile(spec, backend="triton", mode="train", weights=ref.state_dict())
    src = net.archc_source
    for act in ("hardswish", "relu6", "silu"):
        assert f"act={act!r}" in src
    assert src.count("archc_triton.bn_act_conv_unit(") == 4  # each expand BN+act read by its depthwise conv
    assert {m.act for m in net.modules() if isinstance(m, BNAct)} == {"hardswish", "relu6", "silu"}
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([1, 7])
    outs = []
    for model in (ref, net):
        out = model(x)
        nn.functional.cross_entropy(out, target).backward()
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    grads = dict(ref.named_parameters())
    for name, p in net.named_parameters():  # measured: 2e-8 at worst, against gradients up to 0.4
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-5, msg=name)
    theirs = ref.state_dict()
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, theirs[key], rtol=1e-5, atol=1e-6, msg=key)
    assert fallbacks(dispatch_counts(net)) == 0

    ref = archc.compile(spec, backend="torch", mode="eval", weights=theirs)
    net = archc.compile(spec, backend="triton", mode="eval", weights=theirs)
    assert {m.act for m in net.modules() if isinstance(m, FusedConv)} >= {"hardswish", "relu6", "silu"}
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-5)
    assert fallbacks(dispatch_counts(net)) == 0
