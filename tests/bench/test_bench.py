"""`archc bench` and archc.bench: that it runs, reports and refuses correctly; never how fast anything is."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner  # noqa: E402

from archc.api import build  # noqa: E402
from archc.bench.reference import CifarResNet, ResNet, reference_for  # noqa: E402
from archc.cli import main  # noqa: E402
from archc.errors import ArchcError  # noqa: E402
from tests.test_docs_python import _write_files

ROOT = Path(__file__).resolve().parents[2]
SMALL = ("--batch", "2", "--iters", "1", "--warmup", "0", "--set", "input_size=3x16x16")
NO_REFERENCE = """
net tiny(input_size=3x16x16) {
  input input_size
  conv1: conv(3x3, 8)
  bn1: bn
  relu
  avgpool: avgpool
  flatten
  fc: linear(10)
}
"""


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets on a shared 2-core machine: a second intra-op thread mostly waits (BN's barrier)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bench(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["bench", *args])
    return r.exit_code, r.stdout, r.stderr


def candidates(out: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(out)["candidates"]}


def test_eval_json_has_throughput_ratios_and_matching_outputs() -> None:
    code, out, err = bench(
        "specs/cifar/resnet20.arch", "--backend", "torch", "--baseline", "eager,reference", "--mode", "eval", *SMALL,
        "--json",
    )  # fmt: skip
    assert code == 0, err
    r = json.loads(out)
    assert r["net"] == "resnet20" and r["mode"] == "eval" and r["batch"] == 2 and r["input_shape"] == [3, 16, 16]
    assert "cifar_resnet(3, shortcut='A'" in r["reference"] and r["reference_note"] is None
    assert r["baselines"]["eager"].startswith("the spec compiled with no optimisation passes")
    assert r["dtype"] == ("bf16" if torch.cuda.is_available() else "fp32")
    assert r["versions"]["torch"] == torch.__version__
    c = candidates(out)
    # the paper's net: the hand-written reference runs as a second baseline
    assert list(c) == ["eager", "reference", "archc[torch]"]
    for row in c.values():
        assert row["status"] == "ok"
        assert row["img_per_s"] > 0 and row["step_ms"]["median"] > 0 and row["first_run_s"] > 0
        assert {"speedup_vs_eager", "speedup_vs_reference", "speedup_vs_compile", "mem_vs_eager"} <= set(row)
        # every candidate's output against the interpreter's; eager runs the same torch ops
        assert row["max_abs_diff"] < 1e-4 and row["output_close"] is True
    assert c["eager"]["max_abs_diff"] == 0
    archc = c["archc[torch]"]
    assert archc["speedup_vs_eager"] > 0 and archc["speedup_vs_reference"] > 0
    assert c["reference"]["speedup_vs_eager"] > 0 and c["eager"]["speedup_vs_eager"] is None
    assert archc["speedup_vs_compile"] is None  # no torch.compile baseline asked for
    assert "build_first_run_vs_compile" in archc and archc["build_s"] > 0
    assert set(archc["build_ms"]) == {"parse", "elaborate", "passes", "lower"}
    assert archc["max_abs_diff"] < 1e-4 and archc["output_close"] is True


def test_train_mode_prints_the_table() -> None:
    code, out, err = bench("specs/cifar/resnet20.arch", "--mode", "train", *SMALL)
    assert code == 0, err
    for word in ("resnet20", "train, batch 2", "eager", "reference", "archc[torch]", "img/s", "peak", "build"):
        assert word in out
    assert "ref: the hand-written net archc.bench.reference.cifar_resnet(3, shortcut='A'" in out
    assert "SGD(lr=0.1, momentum=0.9, weight_decay=0.0001)" in out
    assert "max diff: fp32 train-mode forward at the same weights against archc.ir.Interpreter" in out
    assert "archc[torch]: max abs diff" in out and "reference: max abs diff" in out
    assert "THE OUTPUTS DIFFER" not in out


def _no_reference_row(out: str, net: str) -> dict:
    r = json.loads(out)
    assert r["reference"] is None and f"no hand-written reference net matches '{net}'" in r["reference_note"]
    c = candidates(out)
    assert list(c) == ["eager", "archc[torch]"]  # no reference row, no error
    for row in c.values():
        assert row["status"] == "ok" and row["output_close"] is True
    assert c["archc[torch]"]["speedup_vs_eager"] > 0 and c["archc[torch]"]["speedup_vs_reference"] is None
    return r


def test_spec_without_reference_benches_against_its_unoptimised_build(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.arch"
    spec.write_text(NO_REFERENCE)
    code, out, err = bench(str(spec), *SMALL, "--json")
    assert code == 0, err
    r = _no_reference_row(out, "tiny")
    assert "no node named layerK.J.conv1" in r["reference_note"]


def test_the_tutorials_preact_net_benches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-activation net of docs/writing-blocks.md, which bench once refused: train (table), eval (JSON)."""
    _write_files(ROOT / "docs" / "writing-blocks.md", tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ("--batch", "2", "--iters", "1", "--warmup", "0", "--set", "n=1", "--set", "input_size=3x8x8")
    code, out, err = bench("preact20.arch", "--mode", "train", *args)
    assert code == 0, err
    assert "eager: the spec compiled with no optimisation passes" in out
    assert "ref: none, no hand-written reference net matches 'preact20'" in out
    assert "archc[torch]: max abs diff" in out and "THE OUTPUTS DIFFER" not in out
    code, out, err = bench("preact20.arch", "--mode", "eval", *args, "--json")
    assert code == 0, err
    _no_reference_row(out, "preact20")


def test_train_mode_needs_a_class_vector(tmp_path: Path) -> None:
    spec = tmp_path / "trunk.arch"
    spec.write_text(NO_REFERENCE.replace("  avgpool: avgpool\n  flatten\n  fc: linear(10)\n", ""))
    code, out, err = bench(str(spec), "--mode", "train", *SMALL)
    assert code == 2 and out == ""
    assert "cross-entropy on a class vector, but its output is 8x16x16" in err and "--mode eval" in err
    code, out, err = bench(str(spec), "--mode", "eval", *SMALL, "--json")
    assert code == 0, err
    assert candidates(out)["archc[torch]"]["output_close"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--baseline", "eager,jit"), "unknown baseline 'jit'"),
        (("--backend", "tvm"), "unknown backend 'tvm'"),
    ],
)
def test_bad_names_exit_2(args: tuple[str, ...], message: str) -> None:
    code, _, err = bench("specs/cifar/resnet20.arch", *args, *SMALL)
    assert code == 2 and message in err


def test_triton_without_gpu_is_reported_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the triton backend can run")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    code, out, err = bench(
        "specs/cifar/resnet20.arch", "--backend", "triton", "--baseline", "none", "--mode", "eval", *SMALL, "--json"
    )
    assert code == 0, err
    c = candidates(out)
    assert list(c) == ["archc[triton]"]
    assert c["archc[triton]"]["status"] == "unavailable"
    assert "needs a CUDA GPU" in c["archc[triton]"]["error"] and "TRITON_INTERPRET=1" in c["archc[triton]"]["error"]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_reference_for_picks_the_hand_written_net(mode: str) -> None:
    r50 = reference_for(build("specs/resnet50.arch", mode=mode, lower=False).graph)
    assert (r50.name, r50.family, r50.block, r50.layers, r50.shortcut, r50.stride_in_1x1, r50.num_classes) == (
        "resnet50",
        "imagenet",
        "bottleneck",
        (3, 4, 6, 3),
        "B",
        True,
        1000,
    )
    v15 = reference_for(
        build("specs/resnet50.arch", mode=mode, overrides={"stride_in_1x1": "false"}, lower=False).graph
    )
    assert v15.stride_in_1x1 is False
    p34 = reference_for(build("specs/plain34.arch", mode=mode, lower=False).graph)
    assert (p34.name, p34.block, p34.layers, p34.shortcut) == ("plain34", "basic", (3, 4, 6, 3), "none")
    c56 = reference_for(build("specs/cifar/resnet56.arch", mode=mode, lower=False).graph)
    assert (c56.name, c56.family, c56.n, c56.shortcut, c56.num_classes) == ("resnet56", "cifar", 9, "A", 10)
    r18c = reference_for(build("specs/resnet18.arch", mode=mode, overrides={"shortcut": "C"}, lower=False).graph)
    assert (r18c.name, r18c.shortcut) == ("resnet18", "C")


def test_reference_makes_the_same_parameters_as_archc() -> None:
    ref = reference_for(build("specs/cifar/resnet20.arch", lower=False).graph)
    model = ref.make()
    assert isinstance(model, CifarResNet)
    archc = build("specs/cifar/resnet20.arch").module
    want = {k: tuple(v.shape) for k, v in archc.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == want
    with torch.device("meta"):
        assert isinstance(reference_for(build("specs/resnet34.arch", lower=False).graph).make(), ResNet)


def test_reference_for_names_what_differs() -> None:
    wide = """
use "specs/blocks/resnet.arch"
net wide(input_size=3x32x32) {
  input input_size
  conv1: conv(3x3, 16)
  bn1: bn
  relu
  layer1: basic_stage(32, blocks=2, shortcut=A)
  layer2: basic_stage(64, blocks=2, stride=2, shortcut=A)
  layer3: basic_stage(128, blocks=2, stride=2, shortcut=A)
  avgpool: avgpool
  flatten
  fc: linear(10)
}
"""
    with pytest.raises(ArchcError, match=r"closest is resnet14, but conv 'layer1.0.conv1' has out 32 \(reference 16\)"):
        reference_for(build(wide, lower=False).graph)


def test_bench_packages_do_not_import_torch() -> None:
    code = "import sys, archc, archc.bench, archc.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_bench_gpu_script_writes_nothing_without_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    bench_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_gpu)
    before = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert bench_gpu.main(["--write"]) == 1
    assert "no CUDA GPU" in capsys.readouterr().out
    after = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert after == before
    # The section it would replace is there, with every row not measured yet.
    section = after.split(bench_gpu.BEGIN, 1)[1].split(bench_gpu.END, 1)[0]
    assert section.strip() == bench_gpu.render(None, {}).strip()


def test_train_loop_benchmark_measures_both_loops():
    """benchmarks/bench_train_loop.py measures real img/s for the bare loop and for archc train."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks/bench_train_loop.py"
    spec = importlib.util.spec_from_file_location("bench_train_loop", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r20 = str(path.parents[1] / "specs/cifar/resnet20.arch")
    bare = mod.bare_loop(r20, batch=8, iters=6, warmup=2, seed=0)
    ours = mod.archc_loop(r20, batch=8, iters=6, warmup=2, seed=0, workers=None)
    assert bare > 0 and ours > 0


def test_triton_bf16_eval_reports_no_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast with float32 parameters, as on a GPU; here in Triton's CPU interpreter."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    code, out, err = bench(
        "specs/cifar/resnet20.arch", "--backend", "triton", "--baseline", "none", "--mode", "eval",
        "--dtype", "bf16", "--batch", "2", "--iters", "1", "--warmup", "0", "--set", "input_size=3x8x8", "--json",
    )  # fmt: skip
    assert code == 0, err
    row = candidates(out)["archc[triton]"]
    assert row["status"] == "ok", row
    # 19 FusedConvs (stem + 18 in the blocks), each called in the first and the timed step
    assert row["dispatch"] == {"kernel": 38} and row["fallbacks"] == 0
    assert "archc[triton]: 38 kernel calls, 0 torch fallbacks" in err
