"""`archc inspect`: state_dict keys -> layer, spec line, torchvision key; checkpoint checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import archc
from archc.api import build
from archc.cli import main
from archc.commands.inspect import TORCHVISION_RESNETS, torchvision_resnet_keys
from tests import reference_resnet as ref

ROOT = Path(__file__).resolve().parents[2]
RESNET20 = ROOT / "specs" / "cifar" / "resnet20.arch"


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def r20_state() -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in archc.compile(RESNET20).state_dict().items()}


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_key_rules_match_the_reference_resnet(depth: int) -> None:
    # tests/reference_resnet.py is written with torchvision's module names
    want = {k: tuple(v.shape) for k, v in ref.resnet(depth).state_dict().items()}
    blocks, kind = next(k for k, v in TORCHVISION_RESNETS.items() if v == f"resnet{depth}")
    assert torchvision_resnet_keys(blocks, kind) == want


def test_resnet18_keys_are_torchvision_keys() -> None:
    code, out, _ = run("inspect", "specs/resnet18.arch", "--keymap", "torchvision")
    assert code == 0
    assert "torchvision resnet18: same: all 122 checkpoint keys have the same name and shape" in out
    assert "layer1.0.conv1.weight" in out and "blocks/resnet.arch:26:10" in out
    code, out, _ = run("inspect", "specs/resnet18.arch", "--json")
    d = json.loads(out)
    assert d["torchvision"]["model"] == "resnet18"
    assert len(d["keys"]) == 122 and all(k["same"] and k["torchvision"] == [k["key"]] for k in d["keys"])
    by_key = {k["key"]: k for k in d["keys"]}
    g = build("specs/resnet18.arch", lower=False).graph
    for key in ("conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "fc.bias"):
        layer = key.rpartition(".")[0]
        assert by_key[key]["layer"] == layer
        assert by_key[key]["loc"] == g.node(layer).loc


def test_eval_mode_shows_which_bn_folds_into_which_conv() -> None:
    code, out, _ = run("inspect", RESNET20, "--mode", "eval", "--json")
    assert code == 0
    d = json.loads(out)
    spec_graph = build(RESNET20, passes=[], lower=False).graph
    by_key = {k["key"]: k for k in d["keys"]}
    assert by_key["conv1.weight"]["folded_bn"] == "bn1"
    assert by_key["conv1.weight"]["folded_bn_loc"] == spec_graph.node("bn1").loc
    assert by_key["conv1.weight"]["from"] == ["conv1.weight", "bn1.weight", "bn1.running_var"]
    assert set(by_key["conv1.bias"]["from"]) == {"bn1.bias", "bn1.running_mean", "bn1.weight", "bn1.running_var"}
    assert {f["bn"] for f in d["folded"]} == {n.name for n in spec_graph.nodes() if n.op == "bn"}
    assert all(k.endswith("num_batches_tracked") for k in d["dropped"])
    assert d["torchvision"]["model"] is None  # no torchvision model has the CIFAR layout
    code, out, _ = run("inspect", RESNET20, "--mode", "eval")
    assert "bn1 (" in out and "19 BNs folded into their convs" in out


def test_option_a_lacks_torchvision_projections() -> None:
    code, out, _ = run("inspect", "specs/resnet34.arch", "--set", "shortcut=A", "--json")
    assert code == 0
    tv = json.loads(out)["torchvision"]
    assert tv["model"] == "resnet34" and tv["only_archc"] == [] and tv["shapes"] == []
    assert "layer2.0.downsample.0.weight" in tv["only_torchvision"] and len(tv["only_torchvision"]) == 18
    code, out, _ = run("inspect", "specs/resnet18.arch", "--set", "num_classes=10")
    assert "shape: fc.weight is 10x512 here, 1000x512 in torchvision" in out


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_matching_weights_exit_0(tmp_path: Path, r20_state: dict, mode: str) -> None:
    path = tmp_path / "ok.safetensors"
    save_file(r20_state, str(path))
    code, out, err = run("inspect", RESNET20, "--weights", path, "--mode", mode)
    assert code == 0, err
    assert f"weights {path}: all 116 keys match" in out
    pt = tmp_path / "ok.pt"
    torch.save({"state_dict": r20_state, "epoch": 3}, pt)  # a training checkpoint wrapping the state_dict
    assert run("inspect", RESNET20, "--weights", pt)[0] == 0


def test_mismatching_weights_list_every_key_and_exit_2(tmp_path: Path, r20_state: dict) -> None:
    state = dict(r20_state)
    del state["layer3.2.bn2.running_var"]
    state["layer9.conv.weight"] = torch.zeros(1)
    state["fc.weight"] = torch.zeros(100, 64)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    code, out, err = run("inspect", RESNET20, "--weights", path)
    assert code == 2
    assert "do not match resnet20: 1 missing key(s), 1 unexpected key(s), 1 key(s) with the wrong shape" in err
    assert "missing (the network needs them, the file lacks them): layer3.2.bn2.running_var" in err
    assert "unexpected (in the file, not in the network): layer9.conv.weight" in err
    assert "'fc.weight' is 100x64 in the file, the network needs 10x64" in err
    code, out, err = run("inspect", RESNET20, "--weights", path, "--json")
    assert code == 2
    w = json.loads(out)["weights"]
    assert not w["ok"] and w["missing"] == ["layer3.2.bn2.running_var"] and w["unexpected"] == ["layer9.conv.weight"]
    assert w["mismatched"] == [{"key": "fc.weight", "file": [100, 64], "net": [10, 64]}]


def test_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = run("inspect", RESNET20, "--weights", tmp_path / "none.safetensors")
    assert code == 2 and "weights file not found" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, _, err = run("inspect", RESNET20, "--weights", junk)
    assert code == 2 and "cannot read weights" in err
    code, _, err = run("inspect", "specs/missing.arch")
    assert code == 2 and "not found" in err


def test_help_has_examples() -> None:
    code, out, _ = run("inspect", "--help")
    assert code == 0 and "Examples:" in out and "archc inspect specs/resnet18.arch --keymap torchvision" in out
