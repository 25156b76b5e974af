"""`output NAME` taps, `cut HxW` and the trunk/head parts of a net."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import archc
from archc.bench.reference import randomise, resnet
from archc.errors import ArchcError, ArgumentError
from archc.ir import Graph

ROOT = Path(__file__).resolve().parents[2]

TAPPED_R50 = """
use "blocks/resnet.arch"
net r50_taps(num_classes=1000) {
  input 3x64x64
  conv1: conv(7x7, 64, /2)
  bn1: bn
  relu: relu
  maxpool: maxpool(3x3, /2)
  layer1: bottleneck_stage(64, blocks=3)
  output res2
  layer2: bottleneck_stage(128, blocks=4, stride=2)
  output res3
  layer3: bottleneck_stage(256, blocks=6, stride=2)
  output res4
  layer4: bottleneck_stage(512, blocks=3, stride=2)
  output res5
}
"""


def _spec(tmp_path, text, name="net.arch"):
    shutil.copytree(ROOT / "specs/blocks", tmp_path / "blocks", dirs_exist_ok=True)
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_resnet50_taps_equal_the_stage_outputs(tmp_path, mode):
    spec = _spec(tmp_path, TAPPED_R50)
    ref = randomise(resnet(50), 3).double()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    b = archc.build(spec, mode=mode)
    net = b.module.double()  # before loading: BN folds into float64 weights
    archc.load_weights(net, state, b.graph)
    seen = {}
    for i in range(1, 5):
        getattr(ref, f"layer{i}").register_forward_hook(lambda m, a, out, k=f"res{i + 1}": seen.__setitem__(k, out))
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ref.train(mode == "train")
    net.train(mode == "train")
    ref(x)
    out = net(x)
    assert list(out) == ["res2", "res3", "res4", "res5"]
    assert [tuple(v.shape[1:]) for v in out.values()] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    for k, v in out.items():
        torch.testing.assert_close(v, seen[k], rtol=1e-9, atol=1e-9)


def test_outputs_in_the_ir_and_the_generated_source(tmp_path):
    g = archc.build(_spec(tmp_path, TAPPED_R50), lower=False).graph
    assert g.output_names == ["res2", "res3", "res4", "res5"]
    assert "return {res2=%" in g.dump_text()
    again = Graph.from_dict(json.loads(g.dump_json()))
    assert again.output_names == g.output_names and again.outputs == g.outputs
    again.lint()
    from archc.backend import get_backend

    src = get_backend("torch").source(g)
    assert "return {'res2': " in src


@pytest.mark.parametrize(
    ("body", "message", "where"),
    [
        ("output a\n  relu\n  output a", "output 'a' is named twice", (6, 10)),
        ("repeat 2 {\n    relu\n    cut 4x4\n  }", "may appear only in a net's own body", (6, 5)),
        ("cut 4x4\n  relu\n  cut 2x2", "at most one `cut`", (6, 3)),
        ("cut 3", "`cut` needs the head's input size as HxW", (4, 7)),
    ],
)
def test_located_errors(tmp_path, body, message, where):
    spec = _spec(tmp_path, f"net n() {{\n  input 3x8x8\n  c: conv(3x3, 4)\n  {body}\n}}\n")
    with pytest.raises(ArgumentError, match=message) as e:
        archc.build(spec, lower=False)
    assert (e.value.loc.line, e.value.loc.col) == where


def test_parts_of_the_c4_detector_specs():
    for depth in (50, 101):
        spec = ROOT / f"specs/detection/faster_rcnn_r{depth}_c4.arch"
        trunk = archc.build(spec, part="trunk")
        head = archc.build(spec, part="head")
        assert tuple(trunk.graph.output.shape) == (1024, 38, 63)  # 600x1000 at stride 16
        assert tuple(head.graph.input.shape) == (1024, 14, 14) and tuple(head.graph.output.shape) == (2048,)
        keys = set(trunk.module.state_dict()) | set(head.module.state_dict())
        classifier = set(archc.compile(ROOT / f"specs/resnet{depth}.arch").state_dict())
        assert keys == classifier - {"fc.weight", "fc.bias"}
        assert not set(trunk.module.state_dict()) & set(head.module.state_dict())
    small = ROOT / "specs/detection/faster_rcnn_small_c4.arch"
    t = archc.compile(small, part="trunk")
    h = archc.compile(small, part="head")
    feats = t(torch.randn(2, 3, 128, 128))
    assert feats.shape == (2, 64, 8, 8)  # a part with one output returns a tensor
    assert h(torch.randn(5, 64, 8, 8)).shape == (5, 128)
    whole = archc.compile(small)(torch.randn(1, 3, 128, 128))
    assert set(whole) == {"res4", "head"}  # without `part`, the head runs on the whole map


def test_part_errors(tmp_path):
    with pytest.raises(ArchcError, match="has no `cut`"):
        archc.build(ROOT / "specs/resnet18.arch", part="trunk", lower=False)
    with pytest.raises(ArchcError, match="unknown part"):
        archc.build(ROOT / "specs/detection/faster_rcnn_small_c4.arch", part="neck", lower=False)
    # the whole net fits (32x32 maps), but a 5x5 pool cannot run on the head's 2x2 input
    spec = _spec(
        tmp_path, "net n() {\n  input 3x32x32\n  c: conv(3x3, 4)\n  cut 2x2\n  p: maxpool(5x5, /1, padding=0)\n}\n"
    )
    assert archc.build(spec, lower=False).graph.output.shape == (4, 28, 28)
    with pytest.raises(ArchcError, match="cannot take the head"):
        archc.build(spec, part="head", lower=False)


def test_build_command_takes_a_part():
    from click.testing import CliRunner

    from archc.cli import main

    r = CliRunner().invoke(
        main, ["build", str(ROOT / "specs/detection/faster_rcnn_small_c4.arch"), "--part", "head", "--json"]
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["input_shape"] == [64, 8, 8] and d["output_shape"] == [128] and d["name"] == "faster_rcnn_small_c4_head"
    bad = CliRunner().invoke(main, ["build", str(ROOT / "specs/resnet18.arch"), "--part", "trunk"])
    assert bad.exit_code == 2 and "has no `cut`" in bad.output
