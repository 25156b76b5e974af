"""Checkpoints are checked in the spec's key space before BN folding: eval mode refuses what train mode does."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import archc
from archc.cli import main

ROOT = Path(__file__).resolve().parents[1]
R20 = str(ROOT / "specs/cifar/resnet20.arch")
R32 = str(ROOT / "specs/cifar/resnet32.arch")


def _state(spec: str = R20) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in archc.compile(spec).state_dict().items()}


def _eval_fails(tmp_path: Path, state: dict, mode: str, torch_file: bool = False) -> str:
    """`archc eval` of `state` (saved in tmp_path) in `mode`: exit 2, no traceback; the error text."""
    path = tmp_path / ("w.pt" if torch_file else "w.safetensors")
    if torch_file:
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    args = ["eval", R20, "--weights", str(path), "--mode", mode, "--data", "synthetic:8", "--device", "cpu"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing written
    return r.output


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_wrong_bn_shape_is_named_in_both_modes(tmp_path, mode):
    state = _state()
    state["bn1.running_var"] = torch.ones(7)
    out = _eval_fails(tmp_path, state, mode)
    assert "'bn1.running_var' has shape (7,), the network needs (16,)" in out


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_value_that_is_no_tensor_is_refused(tmp_path, mode):
    state: dict = _state()
    state["bn1.weight"] = [1.0] * 16  # torch.load(weights_only=True) admits lists
    out = _eval_fails(tmp_path, state, mode, torch_file=True)
    assert "'bn1.weight' is a list, not a tensor" in out


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64])
def test_integer_boolean_and_complex_weights_are_refused(tmp_path, mode, dtype):
    state = _state()
    state["conv1.weight"] = state["conv1.weight"].to(dtype)
    out = _eval_fails(tmp_path, state, mode)
    assert f"'conv1.weight' holds {str(dtype).removeprefix('torch.')} values, the network needs floats" in out


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_nan_weights_and_negative_variances_are_refused(tmp_path, mode):
    state = _state()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["layer2.1.bn2.running_var"][3] = -1.0
    out = _eval_fails(tmp_path, state, mode)
    assert "'layer1.0.conv1.weight' holds NaN or infinite values" in out
    assert "'layer2.1.bn2.running_var' holds negative variances" in out


def test_another_nets_checkpoint_gets_the_same_key_list_in_both_modes(tmp_path):
    state = _state(R32)
    errors = {}
    for mode in ("train", "eval"):
        d = tmp_path / mode
        d.mkdir()
        errors[mode] = _eval_fails(d, state, mode)
    assert errors["train"] == errors["eval"]
    assert "weights do not match the network: unexpected 72 key(s): layer1.3.bn1.bias" in errors["eval"]
    assert "cannot fold" not in errors["eval"]


def test_half_precision_and_a_missing_folded_counter_still_load():
    state = {k: v.half() if v.is_floating_point() else v for k, v in _state().items()}
    del state["bn1.num_batches_tracked"]  # a folded BN needs only its statistics
    b = archc.build(R20, mode="eval")
    archc.load_weights(b.module, state, b.graph)
