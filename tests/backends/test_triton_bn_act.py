"""The triton backend's BNAct against nn.BatchNorm2d + add + activation, in Triton's CPU interpreter."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archc
from archc.errors import BackendError
from archc.ir.activations import ACTIVATIONS, activation_fn

# Triton picks the interpreter for its own library functions (tl.zeros, tl.sum) when
# triton.language is first imported, so the variable has to be set before that import;
# it is restored afterwards and set again per test by the `interpret` fixture, so the
# rest of the session sees the environment it started with.
_lang = sys.modules.get("triton.language")
if _lang is not None and type(_lang.zeros).__name__ != "InterpretedFunction":
    pytest.skip("triton was imported without TRITON_INTERPRET=1; run this file on its own", allow_module_level=True)
_before = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
try:
    import triton  # noqa: F401  (a test dependency: a missing one must fail, not skip)

    from archc_triton import act_kernels, bn_kernels
    from archc_triton.bn_act import BNAct
finally:
    if _before is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = _before

SPEC = str(Path(__file__).resolve().parents[2] / "specs" / "cifar" / "resnet20.arch")
SHAPES = [(2, 3, 5, 5), (4, 24, 1, 1), (3, 20, 7, 7)]


@pytest.fixture(autouse=True)
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the kernels on CPU tensors in Triton's interpreter."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _pair(c: int, residual: bool, seed: int = 0, **kw) -> tuple[BNAct, nn.BatchNorm2d]:
    """A BNAct and a BatchNorm2d with the same random affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c, **kw)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.rand(c, generator=g) - 0.5)
        if bn.running_mean is not None:
            bn.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    m = BNAct(c, residual=residual, **kw)
    m.load_state_dict(bn.state_dict())
    return m, bn


def _reference(bn: nn.BatchNorm2d, x: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
    y = bn(x)
    return torch.relu(y if r is None else y + r)


def _inputs(shape: tuple[int, ...], layout: str, residual: bool, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 2 + 0.5
    r = torch.randn(shape, generator=g) if residual else None
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        r = None if r is None else r.contiguous(memory_format=torch.channels_last)
    x = x.to(dtype).requires_grad_()
    r = None if r is None else r.to(dtype).requires_grad_()
    return x, r


def _step(module: nn.Module, x: torch.Tensor, r: torch.Tensor | None, dy: torch.Tensor):
    """Forward and backward on clones of the inputs: (y, dx, dr, dweight, dbias)."""
    xc = x.detach().clone().requires_grad_()
    rc = None if r is None else r.detach().clone().requires_grad_()
    module.zero_grad()
    y = module(xc, rc) if isinstance(module, BNAct) else _reference(module, xc, rc)
    y.backward(dy)
    return y.detach(), xc.grad, None if rc is None else rc.grad, module.weight.grad, module.bias.grad


def _close(a: torch.Tensor | None, b: torch.Tensor | None, tol: float = 1e-5) -> None:
    assert (a is None) == (b is None)
    if a is not None:
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


def _assert_steps_match(m: BNAct, bn: nn.BatchNorm2d, x, r, dy) -> torch.Tensor:
    ours = _step(m, x, r, dy)
    ref = _step(bn, x, r, dy)
    for a, b in zip(ours, ref, strict=True):
        _close(a, b)
    return ours[0]


def _assert_stats_match(m: BNAct, bn: nn.BatchNorm2d) -> None:
    _close(m.running_mean, bn.running_mean)
    _close(m.running_var, bn.running_var)
    assert int(m.num_batches_tracked) == int(bn.num_batches_tracked)


def test_state_dict_is_batchnorm2d_s() -> None:
    for kw in ({}, {"track_running_stats": False}):
        bn, m = nn.BatchNorm2d(6, **kw), BNAct(6, **kw)
        ours, theirs = m.state_dict(), bn.state_dict()
        assert list(ours) == list(theirs)
        for key, value in theirs.items():
            assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
            torch.testing.assert_close(ours[key], value)  # reset: weight 1, bias 0, mean 0, var 1
        assert [n for n, _ in m.named_parameters()] == [n for n, _ in bn.named_parameters()]
        bn.load_state_dict(m.state_dict())
        m.load_state_dict(bn.state_dict())


def test_old_checkpoint_without_num_batches_tracked_loads() -> None:
    state = nn.BatchNorm2d(4).state_dict()
    del state["num_batches_tracked"]
    state._metadata = {"": {"version": 1}}
    m = BNAct(4)
    m.load_state_dict(state)
    assert int(m.num_batches_tracked) == 0


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_train_matches_batchnorm_add_relu(shape, residual: bool, layout: str) -> None:
    m, bn = _pair(shape[1], residual, seed=1)
    for step in range(2):
        x, r = _inputs(shape, layout, residual, seed=10 + step)
        dy = torch.randn(shape, generator=torch.Generator().manual_seed(20 + step))
        y = _assert_steps_match(m, bn, x, r, dy)
        assert y.dtype == x.dtype and y.is_contiguous(memory_format=torch.channels_last)
        _assert_stats_match(m, bn)
        assert m.num_batches_tracked.item() == step + 1


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_eval_matches_batchnorm_add_relu(residual: bool, layout: str) -> None:
    shape = (3, 7, 4, 3)
    m, bn = _pair(7, residual, seed=2)
    m.eval()
    bn.eval()
    x, r = _inputs(shape, layout, residual, seed=3)
    dy = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    _assert_steps_match(m, bn, x, r, dy)
    _assert_stats_match(m, bn)
    assert int(m.num_batches_tracked) == 0
    with torch.no_grad():  # the inference path saves nothing
        _close(m(x, r), _reference(bn, x, r))


def test_eval_after_training_uses_the_running_statistics() -> None:
    shape = (4, 5, 3, 3)
    m, bn = _pair(5, True, seed=5)
    for step in range(2):
        x, r = _inputs(shape, "nchw", True, seed=step)
        _assert_steps_match(m, bn, x, r, torch.ones(shape))
    m.eval()
    bn.eval()
    x, r = _inputs(shape, "channels_last", True, seed=9)
    _assert_steps_match(m, bn, x, r, torch.randn(shape))


def test_without_running_stats_always_uses_the_batch() -> None:
    shape = (2, 6, 3, 3)
    m, bn = _pair(6, False, seed=6, track_running_stats=False)
    for mode in (True, False):
        m.train(mode)
        bn.train(mode)
        x, r = _inputs(shape, "nchw", False, seed=7)
        _assert_steps_match(m, bn, x, r, torch.randn(shape))


def test_cumulative_average_when_momentum_is_none() -> None:
    shape = (2, 4, 3, 3)
    m, bn = _pair(4, False, seed=8, momentum=None)
    for step in range(2):
        x, r = _inputs(shape, "nchw", False, seed=step)
        _assert_steps_match(m, bn, x, r, torch.randn(shape))
        _assert_stats_match(m, bn)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bfloat16(layout: str) -> None:
    shape = (2, 10, 4, 4)
    m, bn = _pair(10, True, seed=11)
    x, r = _inputs(shape, layout, True, seed=12, dtype=torch.bfloat16)
    dy = torch.randn(shape).to(torch.bfloat16)
    y, dx, dr, dw, db = _step(m, x, r, dy)
    # the reference: float32 on the same (bf16-rounded) values
    ry, rdx, rdr, rdw, rdb = _step(bn, x.float(), r.float(), dy.float())
    assert y.dtype == dx.dtype == dr.dtype == torch.bfloat16
    assert m.weight.grad.dtype == m.running_mean.dtype == torch.float32
    for a, b in ((y, ry), (dx, rdx), (dr, rdr), (dw, rdw), (db, rdb)):
        torch.testing.assert_close(a.float(), b, rtol=2e-2, atol=2e-2)
    _close(m.running_mean, bn.running_mean, 1e-4)
    _close(m.running_var, bn.running_var, 1e-4)


def test_statistics_across_many_tiles_and_splits() -> None:
    """Odd M and C, tiles dealt unevenly to splits, and a mean far larger than the spread."""
    g = torch.Generator().manual_seed(13)
    x = 1000 + torch.randn(203, 7, generator=g) * 0.01
    dy = torch.randn(203, 7, generator=g)
    v, mu = torch.var_mean(x.double(), dim=0, unbiased=False)
    w, b = torch.rand(7, generator=g) + 0.5, torch.zeros(7)
    for splits in (1, 3, 5):
        rm, rv = torch.zeros(7), torch.ones(7)
        mean, invstd = bn_kernels.batch_stats(x, 1e-5, rm, rv, 0.5, block_m=16, max_splits=splits)
        torch.testing.assert_close(mean.double(), mu, rtol=1e-7, atol=0)
        torch.testing.assert_close(invstd.double(), (v + 1e-5).rsqrt(), rtol=1e-5, atol=0)
        torch.testing.assert_close(rv.double(), 0.5 + 0.5 * v * 203 / 202, rtol=1e-5, atol=0)
        dx, _, dw, db = bn_kernels.backward(
            x, None, dy, mean, invstd, w, b, 1e-5, False, True, (True, False, True), block_m=16, max_splits=splits
        )
        # reference in float64 from the formulas, with the kernel's own statistics
        xh = (x.double() - mean.double()) * invstd.double()
        dz = dy.double() * (xh * w.double() + b.double() > 0)
        ref_dx = w.double() * invstd.double() * (dz - dz.mean(0) - xh * (dz * xh).mean(0))
        torch.testing.assert_close(db.double(), dz.sum(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dw.double(), (dz * xh).sum(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dx.double(), ref_dx, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_autograd_keeps_only_the_input_and_per_channel_statistics(residual: bool) -> None:
    n, c, h, w = 4, 16, 6, 6
    m, _ = _pair(c, residual)
    x, r = _inputs((n, c, h, w), "channels_last", residual, seed=14)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(x, r)
    full = [t for t in saved if t.numel() == x.numel()]
    small = [t for t in saved if t.numel() != x.numel()]
    # x itself (no copy) and, with a residual, the output (which its next reader keeps anyway):
    # never the residual, nor the normalised activation
    assert len(full) == (2 if residual else 1)
    assert {t.data_ptr() for t in full} == {t.data_ptr() for t in (x, y if residual else None) if t is not None}
    assert all(t.numel() == c for t in small)
    total = sum(t.numel() * t.element_size() for t in saved)
    assert total <= x.numel() * x.element_size() * len(full) + 4 * c * 4
    y.sum().backward()
    assert x.grad is not None and m.weight.grad is not None


def test_errors_match_batchnorm2d() -> None:
    m = BNAct(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        m(torch.randn(1, 3, 1, 1))
    with pytest.raises(ValueError, match="residual=False"):
        m(torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        m(torch.randn(2, 4, 2, 2))
    assert int(m.num_batches_tracked) == 0
    m.eval()
    assert m(torch.randn(1, 3, 1, 1)).shape == (1, 3, 1, 1)  # eval needs no batch statistics


def test_no_gpu_and_no_interpreter_is_a_backend_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError, match="GPU"):
        archc.compile(SPEC, backend="triton", overrides={"input_size": "3x8x8"})
    with pytest.raises(BackendError, match="GPU"):
        BNAct(3)(torch.randn(2, 3, 2, 2))


def test_resnet20_triton_matches_torch() -> None:
    torch.manual_seed(0)
    ov = {"input_size": "3x8x8"}
    ref = archc.compile(SPEC, backend="torch", mode="train", overrides=ov)
    net = archc.compile(SPEC, backend="triton", mode="train", overrides=ov, weights=ref.state_dict())
    assert list(net.state_dict()) == list(ref.state_dict())
    assert sum(isinstance(mod, BNAct) for mod in net.modules()) == 19
    x = torch.randn(4, 3, 8, 8)
    target = torch.tensor([0, 3, 5, 9])
    outs = []
    for model in (net, ref):
        out = model(x)
        F.cross_entropy(out, target).backward()
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    grads = dict(ref.named_parameters())
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-4, msg=name)
    theirs = ref.state_dict()
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, theirs[key], rtol=1e-4, atol=1e-4, msg=key)
    net.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-4)


def test_unsupported_device_is_a_backend_error() -> None:
    # the meta device stands for any device that is neither CUDA nor the interpreter's CPU
    m = BNAct(3)
    with pytest.raises(BackendError, match="CUDA GPU tensor; got a tensor on 'meta'"):
        m(torch.randn(2, 3, 2, 2, device="meta"))
    meta = BNAct(3, device="meta")
    with pytest.raises(BackendError, match="parameters or residual on 'meta'"):
        meta(torch.randn(2, 3, 2, 2))
    r = BNAct(3, residual=True)
    with pytest.raises(BackendError, match="residual on 'meta'"):
        r(torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2, device="meta"))
    assert int(m.num_batches_tracked) == 0  # refused before any statistics moved


def test_bf16_autocast_runs_the_kernels_and_counts_them() -> None:
    m, bn = _pair(5, residual=False)
    x = torch.randn(2, 5, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), _reference(bn, x.to(torch.bfloat16).float(), None), rtol=2e-2, atol=2e-2)
    assert m.dispatch_counts() == {"kernel": 1}


# --- the activation family ----------------------------------------------------------------------
# Activations of the table the kernels leave to the torch form (none today): a new activation of
# archc.ir.activations must be added to the kernels or listed here, or test_kernels_cover_the_table fails.
TORCH_FORM: tuple[str, ...] = ()
# the torch keywords each activation with attributes is tested with, beyond its defaults
KEYWORDS = {"gelu": [{}, {"approximate": "tanh"}], "leaky_relu": [{}, {"negative_slope": 0.2}]}
ACTS = [("none", {})] + [
    (name, kw) for name in ACTIVATIONS if name not in TORCH_FORM for kw in KEYWORDS.get(name, [{}])
]
ACT_IDS = [name + "".join(f"-{v}" for v in kw.values()) for name, kw in ACTS]
# every activation's break points (relu6 at 0 and 6, hard* at -3 and 3, leaky_relu at 0) and values around them
BREAKS = (-6.0, -3.0, -1.5, 0.0, 0.5, 3.0, 4.5, 6.0, 7.0)


def test_kernels_cover_the_table() -> None:
    import archc_triton

    covered = set(act_kernels.KERNEL_ACTS) - {"none"}
    assert covered | set(TORCH_FORM) == set(ACTIVATIONS) and not covered & set(TORCH_FORM)
    codes = [act_kernels.kernel_act(name).code for name in act_kernels.KERNEL_ACTS]
    codes.append(act_kernels.kernel_act("gelu", approximate="tanh").code)
    assert len(set(codes)) == len(codes)  # one helper branch per form
    assert set(codes) == {*archc_triton.ACT_CODES.values(), archc_triton.GELU_TANH_CODE}
    for name, act in ACTIVATIONS.items():  # every attribute of an activation is exercised below
        assert not act.kwargs or name in KEYWORDS, name


def test_kernel_act_refuses_what_it_cannot_apply() -> None:
    with pytest.raises(ValueError, match="the Triton kernels apply"):
        BNAct(3, act="softplus")
    with pytest.raises(ValueError, match="takes no negative_slope"):
        BNAct(3, act="relu", negative_slope=0.2)
    with pytest.raises(ValueError, match="takes no approximate"):
        BNAct(3, act="silu", approximate="tanh")
    with pytest.raises(ValueError, match="act='gelu'"):
        BNAct(3, act="gelu", approximate="erf")
    assert "act='leaky_relu', negative_slope=0.2" in repr(BNAct(3, act="leaky_relu", negative_slope=0.2))


def act_reference(name: str, kw: dict):
    """The activation as the torch backend applies it: the table's functional form."""
    if name == "none":
        return lambda t: t
    attrs = {attr: kw[keyword] for attr, keyword, _ in ACTIVATIONS[name].kwargs if keyword in kw}
    return activation_fn(name, attrs)


def _act_step(m: BNAct, bn: nn.BatchNorm2d, act, x, r, dy, tol: float = 1e-5) -> list[torch.Tensor | None]:
    """(y, dx, dr, dgamma, dbeta) of BNAct against BatchNorm2d (+ r) + the activation, each checked."""
    outs = []
    for module in (m, bn):
        xc = x.detach().clone().requires_grad_()
        rc = None if r is None else r.detach().clone().requires_grad_()
        module.zero_grad()
        if module is m:
            y = m(xc, rc)
        else:
            z = bn(xc)
            y = act(z if rc is None else z + rc)
        y.backward(dy)
        outs.append([y.detach(), xc.grad, None if rc is None else rc.grad, module.weight.grad, module.bias.grad])
    for a, b in zip(*outs, strict=True):
        _close(a, b, tol)
    return outs[0]


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize(("name", "kw"), ACTS, ids=ACT_IDS)
def test_every_activation_matches_torch(name: str, kw: dict, residual: bool) -> None:
    """A train step (values, every gradient, running statistics), then eval steps with the
    pre-activation exactly on the break points, against BatchNorm2d (+ add) + the table's form."""
    shape = (3, 6, 3, 3)
    _, bn = _pair(6, residual, seed=21)
    m = BNAct(6, residual=residual, act=name, **kw)
    m.load_state_dict(bn.state_dict())
    act = act_reference(name, kw)
    x, r = _inputs(shape, "nchw", residual, seed=22)
    dy = torch.randn(shape, generator=torch.Generator().manual_seed(23))
    _act_step(m, bn, act, x, r, dy)
    _assert_stats_match(m, bn)
    assert m.dispatch_counts() == {"kernel": 1}

    # eval with eps 0, mean 0, var 1, gamma 1, beta 0: BN is the identity exactly, so z = x (+ r)
    # takes every break point exactly; with a residual, x is 0 where r carries them
    m, bn = BNAct(6, eps=0.0, residual=residual, act=name, **kw).eval(), nn.BatchNorm2d(6, eps=0.0).eval()
    index = torch.arange(dy.numel()).reshape(shape)
    values = torch.tensor(BREAKS)[index % len(BREAKS)]
    x, r = values, None
    if residual:
        even = index % 2 == 0
        x, r = torch.where(even, values, 0.0), torch.where(even, 0.0, values)
    # dgamma sums 27 products z * dz per channel with |z| up to 7: a few float32 ulps of each term
    # (a wrong convention at a break point is off by O(dy) in dx and dr)
    y = _act_step(m, bn, act, x, r, dy, tol=5e-5)[0]
    with torch.no_grad():  # the inference path applies the same activation
        _close(m(x, r), y)


@pytest.mark.parametrize(("name", "residual"), [("relu", True), ("silu", True), ("hardswish", False)])
def test_what_backward_keeps_per_activation(name: str, residual: bool) -> None:
    """x always; with a residual, ReLU keeps y (its mask) and a smooth activation keeps r (z = bn(x) + r)."""
    m = BNAct(4, residual=residual, act=name)
    x, r = _inputs((2, 4, 3, 3), "channels_last", residual, seed=24)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = m(x, r)
    full = {t.data_ptr() for t in saved if t.numel() == x.numel()}
    kept = {x.data_ptr()} | ({(y if name == "relu" else r).data_ptr()} if residual else set())
    assert full == kept
