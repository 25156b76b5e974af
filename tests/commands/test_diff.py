"""`archc diff`: per-stage shapes, params and MACs of two specs or two override sets, and layer changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_option_a_vs_b_adds_projections() -> None:
    code, out, _ = run("diff", "specs/resnet34.arch", "--set-a", "shortcut=A", "--set-b", "shortcut=B", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["a"]["overrides"] == {"shortcut": "A"} and d["b"]["overrides"] == {"shortcut": "B"}
    only_b = {n["name"] for n in d["only_in_b"]}
    assert {"layer2.0.downsample.0", "layer2.0.downsample.1", "layer4.0.downsample.0"} <= only_b
    assert len(only_b) == 6
    assert {n["name"] for n in d["only_in_a"]} == {
        f"layer{i}.0.downsample.{op}" for i in (2, 3, 4) for op in ("subsample", "pad")
    }
    t = d["totals"]
    assert t["a"]["params"] == 21_623_848 and t["delta_params"] == 173_824  # +0.17M
    stages = {s["name"]: s for s in d["stages"]}
    assert stages["layer1"]["delta_params"] == 0 and not stages["layer1"]["changed"]
    assert stages["layer2"]["delta_params"] == 128 * 64 + 2 * 128
    assert sum(s["delta_params"] for s in d["stages"]) == t["delta_params"]
    assert sum(s["delta_macs"] for s in d["stages"]) == t["delta_macs"]
    changed = {c["name"]: c["changes"] for c in d["changed"]}
    assert changed["layer2.0.add"]["inputs"][1] == ["layer2.0.bn2", "layer2.0.downsample.1"]

    code, out, _ = run("diff", "specs/resnet34.arch", "--set-a", "shortcut=A", "--set-b", "shortcut=B")
    assert code == 0
    assert "params +173,824 (+174 k, +0.80%)" in out
    assert "layers only in B (6):" in out and "layer2.0.downsample.0  conv -> 128x28x28, 8,192 params" in out
    assert "* layer2" in out and "  layer1 " in out


def test_two_specs_side_by_side() -> None:
    code, out, _ = run("diff", "specs/resnet18.arch", "specs/resnet34.arch", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["totals"]["a"]["params"] == 11_689_512 and d["totals"]["b"]["params"] == 21_797_672
    stages = {s["name"]: s for s in d["stages"]}
    assert stages["layer3"]["a"]["output_shape"] == stages["layer3"]["b"]["output_shape"] == [256, 14, 14]
    assert "layer3.5.conv1" in {n["name"] for n in d["only_in_b"]} and not d["only_in_a"]


def test_changed_attributes_of_same_named_layers() -> None:
    code, out, _ = run("diff", "specs/resnet50.arch", "--set-a", "stride_in_1x1=true", "--set-b", "stride_in_1x1=false")
    assert code == 0
    assert "layer2.0.conv1 (conv): stride 2x2 -> 1x1, shape 128x28x28 -> 128x56x56" in out
    assert "layer2.0.conv2 (conv): stride 1x1 -> 2x2" in out
    assert "params 0, MACs +231,211,008" in out


def test_stages_only_one_side_has(tmp_path: Path) -> None:
    a = tmp_path / "a.arch"
    b = tmp_path / "b.arch"
    a.write_text("net small {\n  input 3x8x8\n  conv1: conv(3x3, 4)\n  pool: avgpool\n  flatten\n  fc: linear(10)\n}\n")
    b.write_text(
        "net small {\n  input 3x8x8\n  conv1: conv(3x3, 8)\n  act: relu\n  pool: avgpool\n  flatten\n"
        "  fc: linear(10)\n}\n"
    )
    code, out, err = run("diff", a, b, "--json")
    assert code == 0, err
    d = json.loads(out)
    assert [s["name"] for s in d["stages"]] == ["conv1", "act", "pool", "flatten", "fc"]
    act = d["stages"][1]
    assert act["a"] is None and act["b"]["output_shape"] == [8, 8, 8] and act["changed"]
    changed = {c["name"]: c["changes"] for c in d["changed"]}
    assert changed["conv1"]["out"] == [4, 8] and changed["conv1"]["params"] == [108, 216]
    assert changed["fc"]["params"] == [50, 90]
    assert d["totals"]["delta_params"] == 108 + 40
    code, out, _ = run("diff", a, b)
    assert "* act" in out and "layers only in B (1):" in out and "conv1 (conv): out 4 -> 8" in out


def test_same_spec_has_no_differences_and_mode_flag() -> None:
    code, out, _ = run("diff", "specs/cifar/resnet20.arch", "specs/cifar/resnet20.arch")
    assert code == 0 and "no differences" in out
    code, out, _ = run("diff", "specs/cifar/resnet20.arch", "--set-a", "n=3", "--set-b", "n=5", "--mode", "eval")
    assert code == 0 and "layer1.4.conv1" in out and "fused_conv" in out


def test_errors_exit_2() -> None:
    code, _, err = run("diff", "specs/resnet18.arch")
    assert code == 2 and "--set-a" in err
    code, _, err = run("diff", "specs/resnet18.arch", "specs/none.arch")
    assert code == 2 and "not found" in err
    code, _, err = run("diff", "specs/resnet18.arch", "--set-b", "shortcut=Q")
    assert code == 2 and "unknown value 'Q'" in err
    code, _, err = run("diff", "specs/resnet18.arch", "--set-b", "oops")
    assert code == 2 and "KEY=VALUE" in err


def test_help_has_examples() -> None:
    code, out, _ = run("diff", "--help")
    assert code == 0 and "Examples:" in out and "--set-a shortcut=A --set-b shortcut=B" in out


def test_rows_pair_by_place_not_by_generated_name(tmp_path: Path) -> None:
    # A's unnamed ReLUs are `relu` (after the stem) and `relu_1` (the last); B's only one, the last, is `relu`
    a, b = tmp_path / "a.arch", tmp_path / "b.arch"
    a.write_text(
        "net a(input_size=3x8x8) {\n  input input_size\n  conv1: conv(3x3, 4)\n  relu\n"
        "  conv2: conv(3x3, 4)\n  relu\n}\n"
    )
    b.write_text(
        "net b(input_size=3x8x8) {\n  input input_size\n  conv1: conv(3x3, 4)\n  bn1: bn\n"
        "  conv2: conv(3x3, 4)\n  relu\n}\n"
    )
    code, out, _ = run("diff", a, b, "--json")
    assert code == 0
    d = json.loads(out)
    rows = [(s.get("name_a"), s["name"], s["a"] is not None, s["b"] is not None) for s in d["stages"]]
    assert rows == [
        (None, "conv1", True, True),
        (None, "relu", True, False),  # the stem ReLU is A's alone
        (None, "bn1", False, True),
        (None, "conv2", True, True),
        ("relu_1", "relu", True, True),  # the last ReLUs are one row
    ]
    assert [n["name"] for n in d["only_in_a"]] == ["relu"] and [n["name"] for n in d["only_in_b"]] == ["bn1"]
    # conv2 reads the stem ReLU in A and bn1 in B; the last ReLUs read the paired conv2s: unchanged
    assert [(c.get("name_a"), c["name"]) for c in d["changed"]] == [(None, "conv2")]
    code, text, _ = run("diff", a, b)
    assert "  relu_1 -> relu " in text and "* relu " in text


def test_bottleneck_relus_pair_with_their_places() -> None:
    code, out, _ = run("diff", "specs/resnet18.arch", "specs/resnet50.arch", "--json")
    assert code == 0
    pairs = {c["name"]: c.get("name_a") for c in json.loads(out)["changed"]}
    # the basic block's last ReLU (relu_1) is the bottleneck's last (relu_2), not its middle one
    assert pairs["layer1.0.relu_2"] == "layer1.0.relu_1" and "layer1.0.relu_1" not in pairs
