"""The onnxruntime backend: same outputs and keys as the torch backend, located errors, options, CLI."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx  # noqa: F401  (test dependencies: a missing one must fail, not skip)
import onnxruntime  # noqa: F401
import pytest
import torch
from click.testing import CliRunner

import archc
from archc import engine_module
from archc.backend import available, get_backend
from archc.cli import main
from archc.errors import BackendError

from .engine_check import (
    RESNET20,
    SPECS,
    assert_close,
    check_bench_beside_torch,
    check_build_writes_a_runner,
    check_every_spec,
    pair,
    random_state,
    specs,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter


def test_registered_and_available() -> None:
    assert available()["onnxruntime"].value == "archc_onnxruntime:OnnxRuntimeBackend"
    backend = get_backend("onnxruntime")
    assert backend.name == "onnxruntime" and backend.version
    assert backend.available() is None


@pytest.mark.parametrize("spec", specs())
def test_outputs_equal_the_torch_backend_on_every_spec(spec: Path) -> None:
    check_every_spec("onnxruntime", spec)  # any batch size, one session


@pytest.mark.parametrize("part", ["trunk", "head"])
def test_detection_trunk_and_head(part: str) -> None:
    spec = SPECS / "detection" / "faster_rcnn_small_c4.arch"
    overrides = {"input_size": "3x64x64"}
    want, got = pair("onnxruntime", spec, overrides, part=part)
    graph = archc.build(spec, mode="eval", overrides=overrides, part=part, lower=False).graph
    x = torch.randn(2, *graph.input.shape)
    with torch.no_grad():
        assert_close(got(x), want(x))


@pytest.mark.slow
def test_default_dynamo_exporter() -> None:
    want, got = pair("onnxruntime", RESNET20, {"input_size": "3x16x16"}, exporter="dynamo")
    x = torch.randn(3, 3, 16, 16)
    with torch.inference_mode():
        assert_close(got(x), want(x))


def test_new_weights_rebuild_the_session() -> None:
    overrides = {"input_size": "3x16x16"}
    want, got = pair("onnxruntime", RESNET20, overrides)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        first = got.session()
        before = got(x)
        assert got.session() is first  # unchanged weights: the same session
        state = random_state(RESNET20, overrides, seed=5)
        archc.load_weights(want, state, archc.build(RESNET20, mode="eval", overrides=overrides, lower=False).graph)
        got.load_state_dict(want.state_dict())
        after = got(x)
        assert got.session() is not first
        assert_close(after, want(x))
        assert (after - before).abs().max() > 1e-2
        second = got.session()
        got.configure(optimization="basic")
        assert got.session() is not second  # rebuilt for the new options
        assert_close(got(x), want(x))


def test_split_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of at least `threads` samples runs in slices through a one-thread session; a smaller one does not."""
    monkeypatch.setattr(engine_module, "MIN_SLICE_MACS", 0)  # these test nets are far below the real threshold
    overrides = {"input_size": "3x16x16"}
    detector = SPECS / "detection" / "faster_rcnn_small_c4.arch"
    want, got = pair("onnxruntime", detector, {"input_size": "3x64x64"}, threads=2)
    x = torch.randn(5, 3, 64, 64)  # slices of 3 and 2; the net returns a dict {res4, head}
    with torch.inference_mode():
        assert_close(got(x), want(x))
        assert set(got.__dict__["_sessions"]) == {1}
        assert got.session(1).get_session_options().intra_op_num_threads == 1
        assert_close(got(x[:1]), want(x[:1]))  # below `threads` samples: the two-thread session
        assert set(got.__dict__["_sessions"]) == {1, 2} and got.__dict__["_model"] is None
    want, got = pair("onnxruntime", RESNET20, overrides, threads=2, split_batch=False)
    x = torch.randn(4, 3, 16, 16)
    with torch.inference_mode():
        assert_close(got(x), want(x))
        assert set(got.__dict__["_sessions"]) == {2}
        got.configure(split_batch=True)  # rebuilt for the new options: now in slices
        assert_close(got(x), want(x))
        assert set(got.__dict__["_sessions"]) == {1}
        assert_close(got(x[:1]), want(x[:1]))
        assert got.__dict__["_model"] is None  # both sessions exist: the file's bytes are dropped
        assert got.session(3).get_session_options().intra_op_num_threads == 3  # exported again
        assert_close(got(x), want(x))
    assert "split_batch=False" in repr(pair("onnxruntime", RESNET20, overrides, split_batch=False)[1])


def test_no_split_below_the_work_threshold() -> None:
    """A slice with less work than MIN_SLICE_MACS is not worth a thread: the batch runs whole."""
    _, got = pair("onnxruntime", RESNET20, {"input_size": "3x16x16"}, threads=2)
    per_slice = got.sample_macs * 4
    assert per_slice < engine_module.MIN_SLICE_MACS
    assert got.split_parts(8) == 1 and got.split_parts(1) == 1
    big = int(engine_module.MIN_SLICE_MACS // got.sample_macs + 1) * 2
    assert got.split_parts(big) == 2  # enough samples: each slice has the work
    got.configure(providers="CPUExecutionProvider", split_batch=False)
    assert got.split_parts(big) == 1


def test_session_options() -> None:
    import onnxruntime as ort

    got = archc.compile(
        RESNET20,
        mode="eval",
        overrides={"input_size": "3x16x16"},
        backend="onnxruntime",
        backend_options={"threads": 1, "optimization": "disable", "spinning": True},
    )
    so = got.session_options()
    assert so.intra_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert so.get_session_config_entry("session.force_spinning_stop") == "0"  # onnxruntime's default
    got.configure(stop_spinning=True)
    assert got.session_options().get_session_config_entry("session.force_spinning_stop") == "1"
    assert "stop_spinning=True" in repr(got)
    assert "optimization='disable'" in repr(got)
    base = ort.SessionOptions()
    base.enable_profiling = False
    base.log_severity_level = 3
    got.configure(session_options=base, threads=2, spinning=False)
    so = got.session_options()
    assert so is base and so.intra_op_num_threads == 2 and so.log_severity_level == 3
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize(
    "options, match",
    [
        ({"thread": 2}, "has no option.*thread"),
        ({"threads": 0}, "threads=0"),
        ({"optimization": "max"}, "is not a level"),
        ({"exporter": "tracing"}, "exporter='tracing'"),
    ],
)
def test_bad_options(options: dict, match: str) -> None:
    with pytest.raises(BackendError, match=match):
        archc.compile(RESNET20, mode="eval", backend="onnxruntime", backend_options=options)


def test_train_mode_is_a_located_error() -> None:
    with pytest.raises(BackendError, match="runs inference only") as e:
        archc.compile(RESNET20, backend="onnxruntime")
    assert "layer 'bn1' (bn_act, at ../blocks/cifar.arch:12:8)" in e.value.message
    assert "mode='eval'" in (e.value.hint or "")


def test_reserved_layer_name_is_located_like_the_torch_backend(tmp_path: Path) -> None:
    spec = tmp_path / "net.arch"
    spec.write_text("net n() {\n  input 3x8x8\n  training: conv(3x3, 4)\n  relu\n}\n")
    errors = []
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(BackendError) as e:
            archc.compile(spec, mode="eval", backend=backend)
        errors.append(e.value.message)
    assert errors[0] == errors[1] and "net.arch:3" in errors[0]


def test_no_gradients() -> None:
    got = archc.compile(RESNET20, mode="eval", overrides={"input_size": "3x16x16"}, backend="onnxruntime")
    with pytest.raises(BackendError, match="no gradients"):
        got(torch.randn(1, 3, 16, 16, requires_grad=True))
    with pytest.raises(BackendError, match=r"takes N x 3x16x16 input, got 1x3x8x8"):
        got(torch.randn(1, 3, 8, 8))


def test_missing_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert "needs onnxruntime" in get_backend("onnxruntime").available()
    with pytest.raises(BackendError, match="needs onnxruntime") as e:
        archc.compile(RESNET20, mode="eval", backend="onnxruntime")
    assert "archc[onnxruntime]" in e.value.hint


def test_build_writes_onnx_and_a_runner(tmp_path: Path) -> None:
    check_build_writes_a_runner("onnxruntime", tmp_path, ({"threads": 1},))


def test_build_in_train_mode_fails_cleanly() -> None:
    r = CliRunner().invoke(main, ["build", str(RESNET20), "--backend", "onnxruntime"])
    assert r.exit_code == 2
    assert "runs inference only" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_bench_torch_and_onnxruntime() -> None:
    check_bench_beside_torch("onnxruntime")
