"""`archc graph`: DOT/SVG/PNG drawings of the IR at layer, block and stage depth."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.api import build
from archc.cli import main
from archc.viz import node_label, to_dot, view

ROOT = Path(__file__).resolve().parents[2]
R18 = "specs/resnet18.arch"

# a node declaration: `name [label=...` (edges have `->` before the attribute list; the bare
# `graph [...]` line holds the title, DOT keywords as node names are always quoted)
_NODE = re.compile(r'^\s*(?!graph \[)("(?:[^"\\]|\\.)*"|\w+) \[label="((?:[^"\\]|\\.)*)"', re.MULTILINE)
_EDGE = re.compile(r'^\s*\S.* -> .* \[label="([^"]*)"', re.MULTILINE)


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def _dot(tmp_path: Path, spec: str = R18, *opts: str) -> str:
    out = tmp_path / "net.dot"
    code, stdout, stderr = run("graph", spec, "-o", str(out), *opts)
    assert code == 0, stderr
    assert f"wrote {out}" in stdout
    return out.read_text()


def _nodes(text: str) -> list[str]:
    return [name for name, _ in _NODE.findall(text)]


def _labels(text: str) -> list[str]:
    """Node labels, in order (edge labels are shapes)."""
    return [label for _, label in _NODE.findall(text)]


def test_layer_depth_draws_every_ir_node_and_edge(tmp_path: Path) -> None:
    g = build(R18, lower=False).graph
    text = _dot(tmp_path, R18, "--depth", "layer")
    assert len(_nodes(text)) == len(g)
    assert len(_EDGE.findall(text)) == sum(len(n.inputs) for n in g.nodes())
    assert text.startswith('digraph "resnet18" {') and text.endswith("}\n")
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        assert f"subgraph cluster_{stage} {{" in text
    assert 'subgraph "cluster_layer2.0" {' in text


def test_paper_labels(tmp_path: Path) -> None:
    labels = _labels(_dot(tmp_path, R18, "--passes", ""))
    for want in ("7x7 conv, 64, /2", "3x3 max pool, /2", "3x3 conv, 64", "3x3 conv, 128, /2", "bn", "relu"):
        assert want in labels
    assert "1x1 conv, 128, /2" in labels  # the option B projection of layer2.0
    assert labels.count("+") == 8  # one add per basic block
    assert labels[-3:] == ["avg pool", "flatten", "fc 1000"]
    assert "3x3 conv, 64, /1" not in labels  # stride shown only when it is not 1


def test_edges_carry_producer_shapes(tmp_path: Path) -> None:
    text = _dot(tmp_path)
    assert 'input -> conv1 [label="3x224x224"];' in text
    assert 'maxpool -> "layer1.0.conv1" [label="64x56x56"];' in text
    assert '"layer2.0.downsample.0" [label="128x28x28"]' not in text  # edges are labelled, nodes are not shapes
    assert 'flatten -> fc [label="512"];' in text
    # the shortcut input of a residual op is dashed
    assert '"layer2.0.downsample.1" -> "layer2.0.bn2" [label="128x28x28", style=dashed];' in text


def test_train_shows_bn_act_and_eval_shows_fused_convs(tmp_path: Path) -> None:
    train = _dot(tmp_path, R18)
    assert "bn + add + relu" in _labels(train) and "bn + relu" in _labels(train)
    ev = _dot(tmp_path, R18, "--mode", "eval")
    labels = _labels(ev)
    assert "7x7 conv, 64, /2 + bn + relu" in labels
    assert "3x3 conv, 128 + bn + add + relu" in labels
    assert "1x1 conv, 128, /2 + bn" in labels  # the projection: BN folded, no ReLU
    assert "bn" not in labels and "relu" not in labels
    assert len(_nodes(ev)) == len(build(R18, mode="eval", lower=False).graph) < len(_nodes(train))


def test_stage_depth_one_node_per_stage(tmp_path: Path) -> None:
    g = build(R18, lower=False).graph
    text = _dot(tmp_path, R18, "--depth", "stage")
    stages = list(dict.fromkeys(n.stage for n in g.nodes()))  # input + g.stages()
    assert len(stages) == len(g.stages()) + 1
    assert [n.strip('"') for n in _nodes(text)] == stages
    labels = _labels(text)
    assert "layer2: 2 blocks, 128x28x28\\nbasic" in labels
    assert "layer4: 2 blocks, 512x7x7\\nbasic" in labels
    assert "7x7 conv, 64, /2" in labels and "fc 1000" in labels
    assert 'layer1 -> layer2 [label="64x56x56"];' in text
    assert "subgraph" not in text
    r50 = _labels(_dot(tmp_path, "specs/resnet50.arch", "--depth", "stage"))
    assert "layer2: 4 blocks, 512x28x28\\nbottleneck" in r50


def test_block_depth_is_between_and_summarises_blocks(tmp_path: Path) -> None:
    counts = {d: len(_nodes(_dot(tmp_path, R18, "--depth", d))) for d in ("layer", "block", "stage")}
    assert counts["stage"] < counts["block"] < counts["layer"]
    text = _dot(tmp_path, R18, "--depth", "block")
    labels = _labels(text)
    assert "layer1.0: basic 64" in labels
    assert "layer2.0: basic 128, /2\\nshortcut: 1x1 conv, 128, /2 + bn" in labels
    assert '"layer1.1" -> "layer2.0" [label="64x56x56"];' in text
    assert text.count('"layer1.1" -> "layer2.0"') == 1  # main path and shortcut read the same value
    r50 = _labels(_dot(tmp_path, "specs/resnet50.arch", "--depth", "block", "--mode", "eval"))
    assert "layer1.0: bottleneck 256\\nshortcut: 1x1 conv, 256 + bn" in r50
    c20 = _labels(_dot(tmp_path, "specs/cifar/resnet20.arch", "--depth", "block"))
    assert "layer2.0: basic 32, /2\\nshortcut: subsample /2 + zero-pad to 32" in c20
    plain = _labels(_dot(tmp_path, "specs/plain18.arch", "--depth", "block"))
    assert "layer2.0: plain basic 128, /2" in plain


def test_option_a_layers(tmp_path: Path) -> None:
    labels = _labels(_dot(tmp_path, "specs/cifar/resnet20.arch", "--passes", ""))
    assert "subsample /2" in labels and "zero-pad to 32" in labels and "fc 10" in labels


def test_output_is_deterministic(tmp_path: Path) -> None:
    for depth in ("layer", "block", "stage"):
        a, b = tmp_path / f"a-{depth}.dot", tmp_path / f"b-{depth}.dot"
        assert run("graph", R18, "-o", str(a), "--depth", depth)[0] == 0
        assert run("graph", R18, "-o", str(b), "--depth", depth)[0] == 0
        assert a.read_bytes() == b.read_bytes()
    g = build("specs/resnet50.arch", lower=False).graph
    assert to_dot(g, "layer") == to_dot(g, "layer")


def test_set_and_json(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "r.dot"
    code, stdout, _ = run("graph", R18, "-o", str(out), "--depth", "block", "--set", "num_classes=10", "--json")
    assert code == 0
    s = json.loads(stdout)
    assert s["depth"] == "block" and s["output"] == str(out) and s["format"] == "dot"
    assert s["nodes"] == len(_nodes(out.read_text())) == 15
    assert s["edges"] == len(_EDGE.findall(out.read_text())) == 14
    assert "fc 10" in _labels(out.read_text())


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' is not installed (apt-get install graphviz)")
def test_svg_and_png_rendered_by_graphviz(tmp_path: Path) -> None:
    svg = tmp_path / "net.svg"
    code, _, stderr = run("graph", R18, "-o", str(svg), "--mode", "eval")
    assert code == 0, stderr
    text = svg.read_text()
    assert "<svg" in text
    root = ET.fromstring(text.encode())  # valid XML
    assert root.tag.endswith("svg")
    assert "7x7 conv, 64, /2 + bn + relu" in text and "512x7x7" in text
    png = tmp_path / "net.png"
    assert run("graph", R18, "-o", str(png), "--depth", "stage")[0] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' is not installed (apt-get install graphviz)")
def test_dot_keywords_as_layer_names_render(tmp_path: Path) -> None:
    spec = tmp_path / "k.arch"
    layers = "node: conv(3x3, 4)\n  edge: relu\n  graph: add { subgraph: conv(1x1, 4) }"
    spec.write_text(f"net k {{ input 3x8x8\n  {layers}\n}}\n")
    svg = tmp_path / "k.svg"
    code, _, stderr = run("graph", str(spec), "-o", str(svg), "--passes", "")
    assert code == 0, stderr
    ET.fromstring(svg.read_bytes())


def test_bad_suffix_exits_2(tmp_path: Path) -> None:
    code, _, err = run("graph", R18, "-o", str(tmp_path / "net.pdf"))
    assert code == 2
    assert "error: cannot tell the output format" in err and ".svg, NAME.png or NAME.dot" in err
    assert not (tmp_path / "net.pdf").exists()


def test_missing_dot_binary_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("archc.commands.graph.shutil.which", lambda name: None)
    code, _, err = run("graph", R18, "-o", str(tmp_path / "net.svg"))
    assert code == 2
    assert "apt-get install -y graphviz" in err and "net.dot" in err
    code, _, _ = run("graph", R18, "-o", str(tmp_path / "net.dot"))  # DOT needs no graphviz
    assert code == 0


def test_spec_errors_exit_2_with_location(tmp_path: Path) -> None:
    spec = tmp_path / "bad.arch"
    spec.write_text("net bad { input 3x8x8\n  conv(3x3, 4, /0)\n}\n")
    code, _, err = run("graph", str(spec), "-o", str(tmp_path / "bad.dot"))
    assert code == 2
    assert f"{spec}:2:" in err and "error:" in err
    code, _, err = run("graph", R18, "-o", str(tmp_path / "x.dot"), "--set", "shortcut=Q")
    assert code == 2 and "unknown value 'Q'" in err
    code, _, err = run("graph", "specs/missing.arch", "-o", str(tmp_path / "x.dot"))
    assert code == 2 and "spec file not found" in err


def test_view_api() -> None:
    g = build(R18, mode="eval", lower=False).graph
    v = view(g, "stage")
    assert [n.id for n in v.nodes][:3] == ["input", "conv1", "maxpool"]
    assert node_label(g.node("layer2.0.downsample.0")) == "1x1 conv, 128, /2 + bn"
    with pytest.raises(ValueError):
        view(g, "module")


def test_viz_uses_graph_methods_only() -> None:
    for path in ("archc/viz.py", "archc/commands/graph.py"):
        assert "networkx" not in (ROOT / path).read_text()


def test_docs_example_is_the_real_output() -> None:
    text = (ROOT / "docs" / "graph.md").read_text()
    (spec,) = re.findall(r"^```arch\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    (dot,) = re.findall(r"^```dot\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    assert to_dot(build(spec, lower=False).graph, "block") == dot


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # the IHDR chunk


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' is not installed (apt-get install graphviz)")
def test_png_resolution(tmp_path: Path) -> None:
    sizes = {}
    for dpi in ("48", "96", None):
        png = tmp_path / f"net{dpi}.png"
        code, out, err = run(
            "graph", R18, "-o", str(png), "--depth", "stage", "--json", *(["--dpi", dpi] if dpi else [])
        )
        assert code == 0, err
        assert json.loads(out)["dpi"] == (int(dpi) if dpi else 150)
        sizes[dpi] = _png_size(png)
    # twice the dpi, twice the pixels (give or take graphviz's rounding); the default is 150
    assert abs(sizes["96"][0] - 2 * sizes["48"][0]) <= 4 and abs(sizes["96"][1] - 2 * sizes["48"][1]) <= 4
    assert abs(sizes[None][0] - sizes["96"][0] * 150 / 96) <= 6
    code, _, err = run("graph", R18, "-o", str(tmp_path / "net.svg"), "--dpi", "200")
    assert code == 2 and "--dpi sets a PNG's resolution" in err
