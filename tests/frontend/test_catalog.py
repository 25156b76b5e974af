"""The spec catalogue: names for the shipped specs, one resolution rule for CLI and API, `use` against it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import archc
from archc.api import build
from archc.cli import main
from archc.errors import ArchcError
from archc.frontend import catalog

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
TINY = "net tiny {\n  input 3x8x8\n  conv(3x3, 4)\n}\n"


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_every_spec_but_the_block_libraries_is_an_entry_named_by_its_path() -> None:
    names = list(catalog.entries())
    expected = sorted(
        p.relative_to(SPECS).with_suffix("").as_posix()
        for p in SPECS.rglob("*.arch")
        if p.relative_to(SPECS).parts[0] != "blocks"
    )
    assert sorted(names) == expected
    assert {"resnet18", "resnet152", "plain34", "cifar/resnet20", "cifar/resnet1202"} <= set(names)
    assert {"detection/faster_rcnn_r50_c4", "cifar/plain110"} <= set(names)
    # top-level nets first, numbers in natural order
    assert names.index("resnet18") < names.index("resnet34") < names.index("resnet101") < names.index("cifar/resnet20")
    assert names.index("cifar/resnet20") < names.index("cifar/resnet110") < names.index("cifar/resnet1202")


def test_the_installed_entries_are_the_repository_specs() -> None:
    # editable: the checkout's specs/ itself; a wheel: the same bytes under archc_specs/
    for name, path in catalog.entries().items():
        assert path.read_bytes() == (SPECS / f"{name}.arch").read_bytes(), name


@pytest.mark.parametrize("name", ["resnet50", "resnet50.arch", "cifar/resnet20", "cifar/resnet20.arch"])
def test_a_catalogue_name_builds_from_any_directory(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    b = build(name, lower=False)
    ref = build(SPECS / f"{name.removesuffix('.arch')}.arch", lower=False)
    assert b.graph.params() == ref.graph.params() and b.graph.macs() == ref.graph.macs()
    assert b.graph.dump_json() == ref.graph.dump_json()  # locations are shown relative to the spec's folder


def test_cli_and_api_agree_on_a_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = _cli("build", "cifar/resnet20", "--json")
    assert r.exit_code == 0, r.output
    assert '"params": 269722' in r.stdout
    model = archc.compile("cifar/resnet20")
    assert sum(p.numel() for p in model.parameters()) == 269722


def test_a_local_file_shadows_a_catalogue_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet50.arch").write_text(TINY)
    assert build("resnet50.arch", lower=False).graph.name == "tiny"  # the path first
    assert build("resnet50", lower=False).graph.name == "resnet50"  # no file of that name: the catalogue
    r = _cli("build", "resnet50.arch", "--json")
    assert r.exit_code == 0 and '"name": "tiny"' in r.stdout


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("resnt50", "resnet50"),
        ("ResNet152", "resnet152"),
        ("resnet20", "cifar/resnet20"),  # a bare name unique to one sub-folder
        ("specs/resnet152.arch", "resnet152"),  # the README's repository path, outside the repository
        ("cifar/resnet1200", "cifar/resnet1202"),
    ],
)
def test_a_misspelled_name_gets_a_did_you_mean(typed: str, meant: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArchcError) as e:
        archc.compile(typed)
    assert e.value.message == f"spec file not found: {typed}"
    assert f"did you mean '{meant}'?" in e.value.hint
    r = _cli("build", typed)
    assert r.exit_code == 2
    assert f"error: spec file not found: {typed}" in r.stderr and f"did you mean '{meant}'?" in r.stderr
    assert "Traceback" not in r.output


def test_a_name_far_from_every_entry_gets_no_guess(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArchcError) as e:
        build("lstm_tagger", lower=False)  # mobilenet is in the zoo now
    assert "did you mean" not in e.value.hint and "archc list" in e.value.hint


def test_use_falls_back_to_the_installed_catalogue(tmp_path: Path, monkeypatch) -> None:
    net = 'use "blocks/resnet.arch"\nnet mine {\n  input 3x32x32\n  layer1: basic(16, 1, B)\n}\n'
    (tmp_path / "mine.arch").write_text(net)
    monkeypatch.chdir(tmp_path)
    g = build("mine.arch", lower=False).graph  # no blocks/ next to it: the catalogue's library
    assert g.params() > 0 and any(n.name.startswith("layer1.") for n in g.nodes())
    assert build(net, lower=False).graph.params() == g.params()  # text specs too
    # a library next to the spec wins over the catalogue's
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks/resnet.arch").write_text("block basic(width, stride=1, shortcut=B) {\n  relu\n}\n")
    assert build("mine.arch", lower=False).graph.params() == 0


def test_a_missing_use_still_names_the_file_and_both_places(tmp_path: Path) -> None:
    spec = tmp_path / "a.arch"
    spec.write_text('use "blocks/nothing.arch"\nnet n {\n  input 3x8x8\n}\n')
    with pytest.raises(ArchcError) as e:
        build(spec, lower=False)
    assert e.value.message == f"cannot find '{tmp_path / 'blocks/nothing.arch'}'"
    assert "installed catalogue" in e.value.hint


@pytest.mark.parametrize("path", ["../pyproject.toml", "../../x.arch", "/etc/passwd", "blocks", "blocks/\0.arch"])
def test_a_use_cannot_climb_out_of_the_catalogue(path: str) -> None:
    assert catalog.library(path) is None
    assert catalog.library("blocks/resnet.arch") is not None


def test_spec_text_is_not_taken_for_a_name() -> None:
    assert catalog.is_text(TINY) and catalog.is_text("net n { input 3x8x8 }")
    assert not catalog.is_text("resnet50") and not catalog.is_text(Path("net {"))
    assert build("net n { input 3x8x8\n relu }", lower=False).graph.name == "n"
