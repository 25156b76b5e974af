"""The torch backend against a hand-written reference ResNet (tests/reference_resnet.py).

Each case builds the reference in float64, gives it a random state (weights, BN affine and
running stats), loads that state into `archc.compile(spec, weights=...)` (strict), and then
compares the two nets in float64: outputs in eval and train mode, the BN running stats
after the train-mode forward, and the gradients of every parameter and of the input.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archc  # noqa: E402
from archc.errors import WeightsError  # noqa: E402
from tests import reference_resnet as ref  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"
# Small ImageNet inputs keep the float64 CPU convs fast. 64x64 leaves a 2x2 map in layer4 (enough for
# train-mode BN); 48x48 also exercises odd map sizes (layer3 3x3 -> layer4 2x2); 32x32 ends at 1x1.
SMALL = "3x64x64"
ODD = "3x48x48"
TINY = "3x32x32"
TOL = {"rtol": 1e-10, "atol": 1e-10}


def close(got: torch.Tensor, want: torch.Tensor, msg: str | None = None) -> None:
    """Equal to float64 round-off at the tensor's own scale.

    The compiled module runs channels_last, so convolutions sum in another order than
    the NCHW reference; gradients that sum thousands of terms then differ by ~1e-12 of
    their magnitude, which an element-wise rtol cannot accept for near-zero entries.
    """
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * scale, msg=msg)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run these small float64 nets on one thread: on a shared 2-core machine, intra-op
    threads of the (slow, non-MKLDNN) float64 convs mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_pair(
    spec: str, reference: torch.nn.Module, overrides: dict | None = None, seed: int = 0
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The float64 reference with a random state, and the compiled net loaded from it."""
    reference = reference.double()
    ref.randomise(reference, seed)
    state = reference.state_dict()
    net = archc.compile(SPECS / spec, overrides=overrides, weights=state).double()
    assert set(net.state_dict()) == set(state)
    for key, value in net.state_dict().items():
        assert value.dtype == state[key].dtype, key
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=f"{key} differs after loading")
    return reference, net


def check_forward(reference: torch.nn.Module, net: torch.nn.Module, shape: tuple[int, ...], seed: int = 1) -> None:
    """Equal outputs in eval mode."""
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    reference.eval()
    net.eval()
    with torch.no_grad():
        want = reference(x)
        got = net(x)
    assert got.shape == want.shape
    assert want.abs().max() > 1e-3  # not a degenerate (all-zero) comparison
    torch.testing.assert_close(got, want, **TOL)


def check_all(reference: torch.nn.Module, net: torch.nn.Module, shape: tuple[int, ...], seed: int = 1) -> None:
    """Eval and train forwards, running stats, parameter and input gradients."""
    check_forward(reference, net, shape, seed)

    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(2, *shape, generator=g, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    xn = x.clone().requires_grad_(True)
    before = {k: v.clone() for k, v in reference.named_buffers()}
    reference.train()
    net.train()
    reference.zero_grad(set_to_none=True)
    net.zero_grad(set_to_none=True)
    want = reference(xr)
    got = net(xn)
    torch.testing.assert_close(got, want, **TOL)

    # BN running stats (and num_batches_tracked) after one train-mode forward
    ref_state, net_state = reference.state_dict(), net.state_dict()
    buffers = [k for k, _ in reference.named_buffers()]
    assert buffers
    for key in buffers:
        torch.testing.assert_close(net_state[key], ref_state[key], **TOL, msg=f"buffer {key} differs")
    # the forward really did move the stats (guards against a no-op comparison)
    assert all(not torch.equal(net_state[k], before[k]) for k in buffers)

    weights = torch.randn(want.shape, generator=g, dtype=torch.float64)
    (want * weights).sum().backward()
    (got * weights).sum().backward()
    ref_params = dict(reference.named_parameters())
    net_params = dict(net.named_parameters())
    assert set(net_params) == set(ref_params)
    for name, p in ref_params.items():
        assert p.grad is not None, name
        assert net_params[name].grad is not None, name
        close(net_params[name].grad, p.grad, msg=f"gradient of {name} differs")
    assert xr.grad is not None and xr.grad.abs().max() > 0
    close(xn.grad, xr.grad)


# --- full checks: forward (eval, train), running stats, gradients ---------------------------


def test_resnet18_equivalence() -> None:
    reference, net = make_pair("resnet18.arch", ref.resnet(18), {"input_size": SMALL})
    check_all(reference, net, (3, 64, 64))


def test_resnet50_equivalence() -> None:
    reference, net = make_pair("resnet50.arch", ref.resnet(50), {"input_size": ODD})
    check_all(reference, net, (3, 48, 48))


def test_cifar_resnet20_equivalence() -> None:
    reference, net = make_pair("cifar/resnet20.arch", ref.cifar_resnet(3))
    check_all(reference, net, (3, 32, 32))


# --- variants: at least the forward ---------------------------------------------------------


@pytest.mark.parametrize("option", ["A", "C"])
def test_resnet18_shortcut_options(option: str) -> None:
    reference, net = make_pair(
        "resnet18.arch", ref.resnet(18, shortcut=option), {"input_size": ODD, "shortcut": option}
    )
    check_forward(reference, net, (3, 48, 48))


def test_resnet50_option_a() -> None:
    """Bottleneck option A: layer1.0 only pads 64 -> 256 channels, later stages also subsample."""
    reference, net = make_pair("resnet50.arch", ref.resnet(50, shortcut="A"), {"input_size": TINY, "shortcut": "A"})
    check_forward(reference, net, (3, 32, 32))


def test_resnet18_option_c_projects_every_block() -> None:
    net = archc.compile(SPECS / "resnet18.arch", overrides={"input_size": SMALL, "shortcut": "C"})
    keys = {k for k in net.state_dict() if ".downsample.0.weight" in k}
    assert keys == {f"layer{i}.{j}.downsample.0.weight" for i in range(1, 5) for j in range(2)}


def test_resnet18_option_a_has_no_projection() -> None:
    net = archc.compile(SPECS / "resnet18.arch", overrides={"input_size": SMALL, "shortcut": "A"})
    assert not [k for k in net.state_dict() if "downsample" in k]


def test_plain18_equivalence() -> None:
    reference, net = make_pair("plain18.arch", ref.resnet(18, shortcut="none"), {"input_size": SMALL})
    check_all(reference, net, (3, 64, 64))


def test_resnet50_stride_on_3x3() -> None:
    overrides = {"input_size": TINY, "stride_in_1x1": "false"}
    reference, net = make_pair("resnet50.arch", ref.resnet(50, stride_in_1x1=False), overrides)
    assert getattr(net.layer2, "0").conv1.stride == (1, 1)
    assert getattr(net.layer2, "0").conv2.stride == (2, 2)
    check_forward(reference, net, (3, 32, 32))

    # the comparison is sharp enough to tell the two stride placements apart
    paper = archc.compile(SPECS / "resnet50.arch", overrides={"input_size": TINY}, weights=reference.state_dict())
    assert getattr(paper.layer2, "0").conv1.stride == (2, 2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(paper.double().eval()(x), reference.eval()(x), **TOL)


def test_key_sets_match_exactly() -> None:
    cases = [
        ("resnet18.arch", ref.resnet(18), {"input_size": SMALL}),
        ("resnet50.arch", ref.resnet(50), {"input_size": SMALL}),
        ("plain18.arch", ref.resnet(18, shortcut="none"), {"input_size": SMALL}),
        ("resnet18.arch", ref.resnet(18, shortcut="C"), {"input_size": SMALL, "shortcut": "C"}),
        ("cifar/resnet20.arch", ref.cifar_resnet(3), None),
    ]
    for spec, reference, overrides in cases:
        net = archc.compile(SPECS / spec, overrides=overrides)
        want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert set(got) == set(want), (spec, sorted(set(got) ^ set(want)))
        assert got == want, spec


# --- loading weights from files, and refusing bad ones -------------------------------------


@pytest.fixture(scope="module")
def cifar_state() -> dict[str, torch.Tensor]:
    reference = ref.cifar_resnet(3)
    ref.randomise(reference, 7)
    return reference.state_dict()


def _assert_loaded(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = net.state_dict()
    assert set(got) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_weights_from_safetensors_file(tmp_path: Path, cifar_state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "resnet20.safetensors"
    save_file({k: v.contiguous() for k, v in cifar_state.items()}, str(path))
    net = archc.compile(SPECS / "cifar/resnet20.arch", weights=path)
    _assert_loaded(net, cifar_state)
    _assert_loaded(archc.compile(SPECS / "cifar/resnet20.arch", weights=str(path)), cifar_state)


def test_weights_from_torch_file(tmp_path: Path, cifar_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "resnet20.pt"
    torch.save(cifar_state, path)
    _assert_loaded(archc.compile(SPECS / "cifar/resnet20.arch", weights=path), cifar_state)
    # a checkpoint dict holding the state_dict is unwrapped
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": cifar_state, "epoch": 3}, wrapped)
    _assert_loaded(archc.compile(SPECS / "cifar/resnet20.arch", weights=wrapped), cifar_state)


class _Payload:
    """An arbitrary pickled object: a weights_only load must refuse it."""


def test_torch_file_is_read_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": _Payload()}, path)
    with pytest.raises(WeightsError):
        archc.compile(SPECS / "cifar/resnet20.arch", weights=path)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        archc.compile(SPECS / "cifar/resnet20.arch", weights=tmp_path / "nope.safetensors")


def _weights_error(state: dict[str, torch.Tensor]) -> str:
    with pytest.raises(WeightsError) as info:
        archc.compile(SPECS / "cifar/resnet20.arch", weights=state)
    return str(info.value)


def test_missing_key_is_named(cifar_state: dict[str, torch.Tensor]) -> None:
    state = dict(cifar_state)
    del state["layer2.1.bn2.running_var"]
    message = _weights_error(state)
    assert "layer2.1.bn2.running_var" in message
    assert "missing" in message


def test_extra_key_is_named(cifar_state: dict[str, torch.Tensor]) -> None:
    state = dict(cifar_state)
    state["layer2.0.downsample.0.weight"] = torch.zeros(32, 16, 1, 1)
    message = _weights_error(state)
    assert "layer2.0.downsample.0.weight" in message
    assert "unexpected" in message


def test_wrong_shape_is_named(cifar_state: dict[str, torch.Tensor]) -> None:
    state = dict(cifar_state)
    state["layer3.2.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    message = _weights_error(state)
    assert "layer3.2.conv1.weight" in message
    assert "(64, 64, 3, 3)" in message


def test_checkpoint_for_another_head_is_refused(cifar_state: dict[str, torch.Tensor]) -> None:
    with pytest.raises(WeightsError, match="fc.weight"):
        archc.compile(SPECS / "cifar/resnet20.arch", overrides={"num_classes": "100"}, weights=cifar_state)
