"""The `archc build` command: table, JSON, output files, errors and exit codes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import archc
from archc.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_table_lists_stages_totals_and_timings() -> None:
    code, out, _ = run("build", "specs/cifar/resnet20.arch")
    assert code == 0
    for word in ("conv1", "layer1", "layer3", "fc", "total", "269,722", "parse", "elaborate", "passes", "lower"):
        assert word in out


def test_json_has_the_documented_fields() -> None:
    code, out, _ = run("build", "specs/resnet34.arch", "--set", "shortcut=A", "--json")
    assert code == 0
    s = json.loads(out)
    assert s["params"] == 21_623_848  # option A adds no parameters: the plain-34 count
    assert s["macs"] == 3_644_493_824
    assert s["input_shape"] == [3, 224, 224] and s["output_shape"] == [1000]
    assert set(s["timings_ms"]) == {"parse", "elaborate", "passes", "lower"}
    assert all(v >= 0 for v in s["timings_ms"].values())
    assert [st["name"] for st in s["stages"]][-1] == "fc"
    for st in s["stages"]:
        assert set(st) >= {"name", "output_shape", "params", "macs"}
    assert s["net_params"]["shortcut"] == "A"


def test_output_dir_files(tmp_path: Path) -> None:
    code, out, _ = run("build", "specs/cifar/resnet20.arch", "-o", str(tmp_path), "--init", "--seed", "3")
    assert code == 0, out
    ir = tmp_path / "resnet20.ir.json"
    src = tmp_path / "resnet20.py"
    weights = tmp_path / "resnet20.safetensors"
    assert ir.exists() and src.exists() and weights.exists()
    assert json.loads(ir.read_text())["params"] == 269_722

    # the same spec gives the same IR dump and the same source, byte for byte
    again = tmp_path / "again"
    assert run("build", "specs/cifar/resnet20.arch", "-o", str(again), "--init", "--seed", "3")[0] == 0
    assert (again / "resnet20.ir.json").read_bytes() == ir.read_bytes()
    assert (again / "resnet20.py").read_bytes() == src.read_bytes()
    a, b = load_file(str(weights)), load_file(str(again / "resnet20.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_generated_source_is_standalone_and_matches_compile(tmp_path: Path) -> None:
    assert run("build", "specs/cifar/resnet20.arch", "-o", str(tmp_path), "--init")[0] == 0
    src = (tmp_path / "resnet20.py").read_text()
    imports = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            imports |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add(node.module.split(".")[0])
    assert imports == {"torch"}
    # forward is straight-line: no loops or branches
    fwd = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef) and n.name == "forward")
    assert not any(isinstance(n, (ast.For, ast.While, ast.If)) for n in ast.walk(fwd))

    # run it in a fresh interpreter that cannot import archc
    script = (
        "import sys, torch; sys.modules['archc'] = None\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from resnet20 import Resnet20\n"
        "from safetensors.torch import load_file\n"
        "m = Resnet20().eval()\n"
        f"m.load_state_dict(load_file({str(tmp_path / 'resnet20.safetensors')!r}), strict=True)\n"
        "torch.manual_seed(1)\n"
        f"torch.save(m(torch.randn(2, 3, 32, 32)), {str(tmp_path / 'y.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    model = archc.compile("specs/cifar/resnet20.arch", weights=str(tmp_path / "resnet20.safetensors")).eval()
    torch.manual_seed(1)
    torch.testing.assert_close(model(torch.randn(2, 3, 32, 32)), torch.load(tmp_path / "y.pt"), rtol=0, atol=0)


def test_spec_error_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.arch"
    bad.write_text("net n() {\n  input 3x8x8\n  cnv(3x3, 4)\n}\n")
    proc = subprocess.run([sys.executable, "-m", "archc", "build", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{bad}:3:3: error: unknown layer or block 'cnv'" in proc.stderr
    assert "^^^" in proc.stderr and "did you mean 'conv'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("specs/resnet34.arch", "--set", "depth=50"), "no parameter 'depth'"),
        (("specs/resnet34.arch", "--set", "shortcut=3"), "expected a name"),
        (("specs/resnet34.arch", "--set", "shortcut=Q"), "unknown value 'Q'"),
        (("specs/resnet34.arch", "--backend", "tpu"), "unknown backend 'tpu'"),
        (("specs/resnet34.arch", "--passes", "dse"), "unknown pass 'dse'"),
        (("specs/nope.arch",), "spec file not found"),
    ],
)
def test_bad_invocations_exit_2(args: tuple[str, ...], message: str) -> None:
    code, out, err = run("build", *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in out + err


def test_set_key_without_value_is_a_usage_error() -> None:
    code, _, err = run("build", "specs/resnet34.arch", "--set", "shortcut")
    assert code == 2 and "KEY=VALUE" in err


def test_init_needs_an_output_dir() -> None:
    code, _, err = run("build", "specs/resnet18.arch", "--init")
    assert code == 2 and "-o" in err


def test_dump_after_prints_the_ir() -> None:
    code, out, _ = run("build", "specs/cifar/resnet20.arch", "--dump-after", "dce")
    assert code == 0
    assert "# IR after dce" in out and "%layer3.2.relu_1 = relu(%layer3.2.add)" in out


def test_set_changes_the_graph() -> None:
    code, out, _ = run("build", "specs/resnet50.arch", "--set", "stride_in_1x1=false", "--json")
    assert code == 0
    assert json.loads(out)["macs"] == 4_089_184_256
    code, out, _ = run("build", "specs/cifar/resnet20.arch", "--set", "input_size=3x64x64", "--json")
    stages = {s["name"]: s for s in json.loads(out)["stages"]}
    assert stages["layer1"]["output_shape"] == [16, 64, 64]


def test_totals_carry_si_units(capsys: pytest.CaptureFixture[str]) -> None:
    from archc.cli import _print_table, _summary

    _print_table(_summary(archc.build("specs/cifar/resnet20.arch", lower=False)))
    out = capsys.readouterr().out
    assert "269,722 (270 k)" in out and "40,551,040 (40.6 M)" in out and "e9)" not in out


def test_detector_table_marks_the_per_roi_head_and_what_it_leaves_out(capsys: pytest.CaptureFixture[str]) -> None:
    from archc.cli import _print_table, _summary

    s = _summary(archc.build("specs/detection/faster_rcnn_small_c4.arch", lower=False))
    assert s["cut"]["after"] == "layer3" and s["cut"]["size"] == [8, 8]
    assert [(o["name"], o["shape"], o["per_roi"]) for o in s["outputs"]] == [
        ("res4", [64, 8, 8], False),
        ("head", [128], True),
    ]
    _print_table(s)
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = {n: next(i for i, line in enumerate(lines) if line.startswith(f"│ {n}")) for n in ("layer3", "layer4")}
    per_roi = next(i for i, line in enumerate(lines) if "per RoI:" in line)
    assert at["layer3"] < per_roi < at["layer4"]  # the head's rows come after a "per RoI" row
    total = next(line for line in lines if "total" in line)
    # the total no longer names the trunk's 64x8x8 under the head's last row of 128
    assert "trunk + 1 RoI" in total and "64x8x8" not in total and "128" not in total.split("│")[2]
    caption = " ".join(out.split())
    assert "res4 64x8x8, head 128 per RoI" in caption
    assert "Not in these totals: the RPN and the box classifier and regressor" in caption
