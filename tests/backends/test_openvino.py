"""The openvino backend: same outputs and keys as the torch backend, compiled shapes, split batches, errors, CLI."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import openvino  # noqa: F401  (a test dependency: a missing one must fail, not skip)
import pytest
import torch

import archc
from archc import engine_module
from archc.backend import available, get_backend
from archc.errors import BackendError

from .engine_check import (
    RESNET20,
    assert_close,
    check_bench_beside_torch,
    check_build_writes_a_runner,
    check_every_spec,
    pair,
    random_state,
    specs,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter
SMALL20 = {"input_size": "3x16x16"}
# Deeper twins of a shipped net with the same blocks and ops, left to the onnxruntime backend's test (which
# checks every spec's export): the shallower one runs here (in brackets), and OpenVINO compiles op by op.
TWINS = frozenset(
    {
        "resnet1202",  # (resnet20 ... resnet110)
        "preact_resnet1001",  # (preact_resnet164)
        "resnet101",  # (resnet50)
        "resnet152",  # (resnet50)
        "faster_rcnn_r101_c4",  # (faster_rcnn_r50_c4)
        "resnext101_32x8d",  # (resnext50_32x4d)
    }
)


def test_registered_and_available() -> None:
    assert available()["openvino"].value == "archc_openvino:OpenVinoBackend"
    backend = get_backend("openvino")
    assert backend.name == "openvino" and backend.version
    assert backend.available() is None


@pytest.mark.parametrize("spec", specs(skip=TWINS))
def test_outputs_equal_the_torch_backend_on_every_spec(spec: Path) -> None:
    check_every_spec("openvino", spec, batches=(3,))  # one compile per spec: the other tests vary the batch


def test_one_compiled_model_per_batch_size_and_stream_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "MIN_SLICE_MACS", 0)  # the test net is far below the real threshold
    want, got = pair("openvino", RESNET20, SMALL20, threads=2, max_shapes=3)
    with torch.inference_mode():
        for batch in (1, 4, 1, 5):
            x = torch.randn(batch, 3, 16, 16)
            assert_close(got(x), want(x))
        cache = got.__dict__["_compiled"]
        # 1: one request; 4: two slices of 2 on two streams; 5: slices of 3 and 2 (most recently used last)
        assert list(cache) == [(1, 1), (2, 2), (3, 2)]
        cm, requests = cache[(3, 2)]
        assert len(requests) == 2 and cm.get_property("NUM_STREAMS") == 2
        assert tuple(cm.input(0).get_shape()) == (3, 3, 16, 16)
        assert str(cm.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
        first = cache[(2, 2)][0]
        x = torch.randn(8, 3, 16, 16)  # slices of 4: a fourth compiled model; the least recently used goes
        assert_close(got(x), want(x))
        assert list(cache) == [(2, 2), (3, 2), (4, 2)]
        assert_close(got(x[:4]), want(x[:4]))
        assert cache[(2, 2)][0] is first  # the same compiled model, reused


def test_dynamic_shapes_and_no_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "MIN_SLICE_MACS", 0)
    want, got = pair("openvino", RESNET20, SMALL20, threads=2, static_shapes=False, split_batch=False)
    with torch.inference_mode():
        for batch in (1, 3, 2):
            x = torch.randn(batch, 3, 16, 16)
            assert_close(got(x), want(x))
    assert list(got.__dict__["_compiled"]) == [(None, 1)]
    got.configure(split_batch=True)  # dynamic shapes, split: one compiled model serves both slice sizes
    x = torch.randn(5, 3, 16, 16)
    with torch.inference_mode():
        assert_close(got(x), want(x))
    assert list(got.__dict__["_compiled"]) == [(None, 2)]
    assert "static_shapes=False" in repr(got)


def test_new_weights_recompile() -> None:
    want, got = pair("openvino", RESNET20, SMALL20)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = got(x)
        model = got.model()
        assert got.model() is model  # unchanged weights: the same model
        state = random_state(RESNET20, SMALL20, seed=5)
        archc.load_weights(want, state, archc.build(RESNET20, mode="eval", overrides=SMALL20, lower=False).graph)
        got.load_state_dict(want.state_dict())
        after = got(x)
        assert got.model() is not model
        assert_close(after, want(x))
        assert (after - before).abs().max() > 1e-2


def test_a_replaced_parameter_is_seen() -> None:
    want, got = pair("openvino", RESNET20, SMALL20)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        got(x)
        model = got.model()
        owner = next(m for m in got.modules() if isinstance(getattr(m, "weight", None), torch.nn.Parameter))
        owner.weight = torch.nn.Parameter(owner.weight * 2)  # a new tensor, not an in-place edit
        got(x)
        assert got.model() is not model


def test_deepcopy_drops_the_compiled_models() -> None:
    want, got = pair("openvino", RESNET20, SMALL20)
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        got(x)
        clone = copy.deepcopy(got)  # through __getstate__: compiled models do not copy
        assert clone.__dict__["_compiled"] == {} and got.__dict__["_compiled"]
        assert clone.__dict__["_compiled"] is not got.__dict__["_compiled"]
        assert_close(clone(x), want(x))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"thread": 2}, "has no option.*thread"),
        ({"threads": 0}, "threads=0"),
        ({"max_shapes": 0}, "max_shapes=0"),
        ({"precision": "int8"}, "is not a precision"),
        ({"exporter": "tracing"}, "exporter='tracing'"),
        ({"config": "fast"}, "dict of OpenVINO properties"),
    ],
)
def test_bad_options(options: dict, match: str) -> None:
    with pytest.raises(BackendError, match=match):
        archc.compile(RESNET20, mode="eval", backend="openvino", backend_options=options)


def test_bad_device_is_a_backend_error() -> None:
    options = {"device": "NPU9"}
    got = archc.compile(RESNET20, mode="eval", overrides=SMALL20, backend="openvino", backend_options=options)
    with pytest.raises(BackendError, match="OpenVINO could not compile"):
        got(torch.randn(1, 3, 16, 16))


def test_train_mode_no_gradients_and_shapes_are_errors() -> None:
    with pytest.raises(BackendError, match="runs inference only") as e:
        archc.compile(RESNET20, backend="openvino")
    assert "layer 'bn1' (bn_act, at ../blocks/cifar.arch:12:8)" in e.value.message
    got = archc.compile(RESNET20, mode="eval", overrides=SMALL20, backend="openvino")
    with pytest.raises(BackendError, match="the openvino backend computes no gradients"):
        got(torch.randn(1, 3, 16, 16, requires_grad=True))
    with pytest.raises(BackendError, match=r"takes N x 3x16x16 input, got 1x3x8x8"):
        got(torch.randn(1, 3, 8, 8))


def test_missing_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert "needs openvino" in get_backend("openvino").available()
    with pytest.raises(BackendError, match="needs openvino") as e:
        archc.compile(RESNET20, mode="eval", backend="openvino")
    assert "archc[openvino]" in e.value.hint


def test_build_writes_onnx_and_a_runner(tmp_path: Path) -> None:
    # the batch dimension dynamic, then fixed
    check_build_writes_a_runner("openvino", tmp_path, ({"threads": 1}, {"batch": 2}))


@pytest.mark.slow
def test_bench_torch_and_openvino() -> None:
    check_bench_beside_torch("openvino")
