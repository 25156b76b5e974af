"""archc_triton.FusedConv against the plain torch expression, in Triton's CPU interpreter.

The kernels run on CPU tensors with TRITON_INTERPRET=1, which `triton.jit` reads when a
kernel is decorated, so it is set before triton and the kernel module are imported (and
again while these tests run, since the interpreter and `require_device` read it later); it
is restored in between so other test modules see the environment they started with. Shapes
are small because the interpreter is slow; sizes are not multiples of the block sizes.
The `kernels_only` fixture makes a test fail if FusedConv took its torch fallback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch  # noqa: E402

_PREVIOUS = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"
try:
    import torch.nn.functional as F  # noqa: E402
    import triton  # noqa: F401  (a test dependency: a missing one must fail, not skip)

    import archc  # noqa: E402
    from archc.api import build  # noqa: E402
    from archc.bench.reference import randomise  # noqa: E402
    from archc_triton import conv as conv_mod  # noqa: E402
    from archc_triton import conv_kernels  # noqa: E402
    from archc_triton.conv import FusedConv  # noqa: E402
    from tests.backends.test_triton_bn_act import ACT_IDS, ACTS, BREAKS, act_reference  # noqa: E402
finally:
    if _PREVIOUS is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = _PREVIOUS

SPECS = Path(__file__).resolve().parents[2] / "specs"
F32 = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def kernels_only(monkeypatch):
    """Fail the test if FusedConv falls back to the torch expression instead of the kernels."""

    def refuse(self, x, residual=None):
        raise AssertionError("FusedConv took the torch fallback")

    monkeypatch.setattr(FusedConv, "torch_forward", refuse)


def test_interpreter_is_on():
    # if another module imported the kernels first without the variable, they would be compiled for a GPU
    assert conv_kernels.INTERPRETED, "archc_triton.conv_kernels was imported before TRITON_INTERPRET=1"
    assert type(conv_kernels.conv1x1_gemm_kernel).__name__ == "InterpretedFunction"
    assert type(conv_kernels.bias_act_kernel).__name__ == "InterpretedFunction"


def reference(m: FusedConv, x: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
    """act(F.conv2d(x, W, b) [+ r]) in float32, NCHW."""
    w, b = m.weight.float(), m.bias.float()
    y = F.conv2d(x.float(), w, b, m.stride, m.padding, m.dilation, m.groups)
    if r is not None:
        y = y + r.float()
    return act_reference(m.act, m.kernel_act.keywords())(y)


def make(cin, cout, k, stride, padding, groups=1, act="relu", residual=False, dtype=torch.float32, seed=0, **kw):
    torch.manual_seed(seed)
    m = FusedConv(cin, cout, k, stride=stride, padding=padding, groups=groups, act=act, residual=residual, **kw)
    with torch.no_grad():
        m.bias.normal_()  # the default init gives a small bias; make it matter
    return m.to(dtype)


# (cin, cout, kernel, stride, padding, groups, H=W): none of the channel counts is a power of two
CONVS = {
    "1x1": (40, 20, 1, 1, 0, 1, 9),  # K = 40: two K steps of 32, the second masked
    "1x1/2": (20, 12, 1, 2, 0, 1, 9),
    "1x1/2-odd": (6, 18, 1, 2, 0, 1, 7),
    "3x3": (12, 20, 3, 1, 1, 1, 7),
    "3x3/2": (12, 20, 3, 2, 1, 1, 9),
    "7x7/2": (3, 20, 7, 2, 3, 1, 9),
    "3x3-grouped": (12, 18, 3, 1, 1, 3, 5),
}


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("act", ["relu", "none"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_float32_matches_torch(name, act, residual, layout, kernels_only):
    cin, cout, k, s, p, g, hw = CONVS[name]
    m = make(cin, cout, k, s, p, g, act=act, residual=residual)
    assert m.is_gemm == (k == 1)
    x = torch.randn(2, cin, hw, hw)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    want_shape = F.conv2d(x, m.weight, None, s, p, 1, g).shape
    r = torch.randn(want_shape) if residual else None  # NCHW residual: the module must cope
    with torch.no_grad():
        y = m(x, r) if residual else m(x)
    assert y.shape == want_shape and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, reference(m, x, r), **F32)


@pytest.mark.parametrize(("act", "kw"), ACTS, ids=ACT_IDS)
def test_every_activation_in_both_kernels(act, kw, kernels_only):
    """The GEMM's and the epilogue kernel's activation against the table's torch form: random
    outputs, and outputs exactly on the break points (zero weight, the bias carrying them)."""
    for name in ("1x1/2", "3x3"):
        cin, cout, k, s, p, g, hw = CONVS[name]
        m = make(cin, cout, k, s, p, g, act=act, residual=True, **kw)
        x = torch.randn(2, cin, hw, hw) * 2
        r = torch.randn(F.conv2d(x, m.weight, None, s, p).shape)
        with torch.no_grad():
            torch.testing.assert_close(m(x, r), reference(m, x, r), **F32)
            m.weight.zero_()
            m.bias.copy_(torch.tensor(BREAKS)[torch.arange(cout) % len(BREAKS)])
            y = m(x, torch.zeros_like(r))
        torch.testing.assert_close(y, reference(m, x, torch.zeros_like(r)), **F32)
        assert m.dispatch_counts() == {"kernel": 2}


@pytest.mark.parametrize("name", ["1x1", "1x1/2", "3x3/2", "7x7/2"])
def test_bfloat16(name, kernels_only):
    cin, cout, k, s, p, g, hw = CONVS[name]
    m = make(cin, cout, k, s, p, g, residual=True, dtype=torch.bfloat16)
    x = torch.randn(2, cin, hw, hw, dtype=torch.bfloat16)
    r = torch.randn(F.conv2d(x.float(), m.weight.float(), None, s, p).shape, dtype=torch.bfloat16)
    with torch.inference_mode():
        y = m(x, r)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    want = reference(m, x, r)
    # bf16 keeps 8 bits of mantissa: one rounding of the output (and, off the GEMM path, of the conv)
    torch.testing.assert_close(y.float(), want, rtol=2e-2, atol=2e-2 * want.abs().max().item())


def test_small_tiles_every_dimension_masked(monkeypatch, kernels_only):
    """Force 16-wide tiles so M, N and K all span several tiles, each with a ragged last one,
    and several GROUP_M groups of the grouped tile order (one of them short)."""
    small = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_warps=4, num_stages=1)
    monkeypatch.setattr(conv_mod, "gemm_config", lambda *a: small)
    monkeypatch.setattr(conv_mod, "epilogue_config", lambda *a: dict(BLOCK_M=16, BLOCK_C=16, num_warps=4))
    for k, s, p in ((1, 1, 0), (1, 2, 0), (3, 1, 1)):
        m = make(37, 35, k, s, p, residual=True, seed=k + s)  # K = 37, N = 35: 3 tiles each, last ragged
        x = torch.randn(2, 37, 9, 8)  # M = 144 (stride 1) or 40 (stride 2)
        r = torch.randn(F.conv2d(x, m.weight, None, s, p).shape)
        with torch.no_grad():
            y = m(x, r)
        torch.testing.assert_close(y, reference(m, x, r), **F32)


def test_state_dict_keys_are_conv2d_keys():
    m = FusedConv(6, 10, 3, stride=2, padding=1, act="relu", residual=True)
    conv = torch.nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=True)
    assert list(m.state_dict()) == list(conv.state_dict()) == ["weight", "bias"]
    assert all(m.state_dict()[k].shape == v.shape for k, v in conv.state_dict().items())
    m.load_state_dict(conv.state_dict(), strict=True)
    assert isinstance(m, torch.nn.Conv2d)
    assert "act='relu', residual=True" in repr(m)


def test_residual_must_match_the_flag():
    with pytest.raises(ValueError, match="residual=True was called without"):
        FusedConv(4, 4, 1, residual=True)(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="residual=False was called with"):
        FusedConv(4, 4, 1)(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="act must be"):
        FusedConv(4, 4, 1, act="softplus")
    with pytest.raises(ValueError, match="takes no negative_slope"):
        FusedConv(4, 4, 1, act="gelu", negative_slope=0.2)
    with torch.no_grad(), pytest.raises(ValueError, match="does not match the output"):
        FusedConv(4, 4, 1, residual=True)(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 2, 2))


@pytest.mark.parametrize("k", [1, 3])
def test_autograd_falls_back_to_torch(k):
    """With autograd recording, forward is the differentiable torch expression: same values, same grads."""
    m = make(6, 10, k, 2, k // 2, residual=True)
    x = torch.randn(2, 6, 7, 7, requires_grad=True)
    r = torch.randn(2, 10, 4, 4, requires_grad=True)
    y = m(x, r)
    assert y.grad_fn is not None and y.is_contiguous(memory_format=torch.channels_last)
    y.square().sum().backward()
    got = [t.grad.clone() for t in (x, r, m.weight, m.bias)]
    for t in (x, r, m.weight, m.bias):
        t.grad = None
    reference(m, x, r).square().sum().backward()
    for g, t in zip(got, (x, r, m.weight, m.bias)):
        torch.testing.assert_close(g, t.grad, **F32)


@pytest.mark.parametrize(
    "spec, overrides",
    [
        # option A shortcuts: every conv is 3x3 (cuDNN/ATen + epilogue), residuals padded views
        ("cifar/resnet20.arch", {"input_size": "3x8x8"}),
        # bottlenecks: 1x1 GEMMs with stride (stride_in_1x1) and fused residual, 7x7/2 stem, projections
        ("resnet50.arch", {"input_size": "3x32x32", "num_classes": 10}),
    ],
)
def test_end_to_end_matches_torch_backend_and_unoptimised(spec, overrides, kernels_only):
    path = SPECS / spec
    plain = build(path, passes=["dce"], overrides=overrides).module
    randomise(plain, seed=7)
    state = plain.state_dict()
    plain.eval()
    fused = archc.compile(path, backend="triton", mode="eval", weights=state, overrides=overrides)
    eager = archc.compile(path, backend="torch", mode="eval", weights=state, overrides=overrides)
    assert any(isinstance(m, FusedConv) for m in fused.modules())
    shape = [int(v) for v in overrides["input_size"].split("x")]
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, via_torch, want = fused(x), eager(x), plain(x)
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(got, via_torch, rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name", ["1x1/2", "3x3"])
def test_autocast_bf16_uses_the_kernels_with_a_cached_weight_copy(name, kernels_only):
    """fp32 parameters, bf16 autocast: the kernels run in bf16 on a cached copy of the weight."""
    cin, cout, k, s, p, g, hw = CONVS[name]
    m = make(cin, cout, k, s, p, g, residual=True)  # float32 parameters, as a training run keeps them
    x = torch.randn(2, cin, hw, hw)  # float32 input: autocast casts it, as F.conv2d would
    r = torch.randn(F.conv2d(x, m.weight, None, s, p).shape, dtype=torch.bfloat16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x, r)
        copy = m._weight_cast.get(m.weight, torch.bfloat16)
        assert m._weight_cast.get(m.weight, torch.bfloat16) is copy  # unchanged parameter: no new copy
    assert y.dtype == torch.bfloat16 and m.dispatch_counts() == {"kernel": 1}
    want = reference(m, x.bfloat16(), r)
    torch.testing.assert_close(y.float(), want, rtol=2e-2, atol=2e-2 * want.abs().max().item())
    # an optimizer-style in-place update bumps the version counter: the copy is made again
    with torch.no_grad():
        m.weight.mul_(-1)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y2 = m(x, r)
        assert m._weight_cast.get(m.weight, torch.bfloat16) is not copy
    want2 = reference(m, x.bfloat16(), r)
    torch.testing.assert_close(y2.float(), want2, rtol=2e-2, atol=2e-2 * want2.abs().max().item())
    assert m.dispatch_counts() == {"kernel": 2}


def test_fallbacks_are_counted_with_their_reason():
    m = make(6, 10, 1, 1, 0)
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad():
        m(x.bfloat16().float())  # kernels
        with pytest.raises(RuntimeError):
            m(x.bfloat16())  # bf16 input, float32 weight, no autocast: torch's own dtype error
        m(x[0])  # unbatched 3D input
        assert m.fallback_reason(x.double(), None) == "dtype float64"
    m(x.requires_grad_())  # autograd records
    assert m.dispatch_counts() == {"kernel": 1, "dtype mismatch": 1, "not 4D": 1, "autograd": 1}


def test_tf32_setting_is_read_through_fp32_precision(monkeypatch):
    from archc_triton import dispatch

    cudnn = torch.backends.cudnn
    before = cudnn.conv.fp32_precision
    try:
        cudnn.conv.fp32_precision = "ieee"
        assert not dispatch.tf32_enabled()
        cudnn.conv.fp32_precision = "tf32"
        assert dispatch.tf32_enabled()
    finally:
        cudnn.conv.fp32_precision = before

    class Legacy:  # torch < 2.9: only the allow_tf32 flag exists
        allow_tf32 = True

    monkeypatch.setattr(torch.backends, "cudnn", Legacy)
    assert dispatch.tf32_enabled()
    Legacy.allow_tf32 = False
    assert not dispatch.tf32_enabled()


def test_resnet_under_cpu_autocast_takes_no_fallback():
    """The bf16 eval path of the benchmark, in the interpreter: every FusedConv call runs the kernels."""
    from archc.bench.dispatch import dispatch_counts, fallbacks

    path = SPECS / "resnet50.arch"
    ov = {"input_size": "3x32x32", "num_classes": 10}
    plain = build(path, passes=["dce"], overrides=ov).module
    randomise(plain, seed=3)
    net = archc.compile(path, backend="triton", mode="eval", weights=plain.state_dict(), overrides=ov)
    convs = sum(isinstance(m, FusedConv) for m in net.modules())
    assert convs == 53
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = net(x)
    counts = dispatch_counts(net)
    assert counts == {"kernel": convs} and fallbacks(counts) == 0
    with torch.no_grad():
        want = plain.eval()(x)
    # 53 convs in bf16. Triton's interpreter converts float32 to bfloat16 by truncation (a GPU
    # rounds to nearest), a bias that adds up over the layers: 7% here against 0.8% for torch's
    # bf16 convs. A wrong function is off by O(1).
    err = (got.float() - want).norm() / want.norm()
    assert err < 0.15, err
