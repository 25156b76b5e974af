"""`archc list` and `archc.list_models`: the catalogue with sizes computed from the specs, filters, laziness."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import archc
from archc import models
from archc.api import build
from archc.cli import main
from archc.frontend import catalog


def _cli(*args: str):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})  # rich reads the width from COLUMNS


def test_json_lists_every_entry_with_the_sizes_of_its_graph() -> None:
    r = _cli("list", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    rows = {m["name"]: m for m in out["models"]}
    assert list(rows) == list(catalog.entries())
    assert out["catalogue"] == str(catalog.root())
    r50 = rows["resnet50"]
    assert (r50["params"], r50["input_shape"], r50["output_shape"]) == (25_557_032, [3, 224, 224], [1000])
    assert r50["title"] == "ResNet-50" and r50["description"].startswith("ResNet-50 (Table 1")
    for name in ("resnet152", "cifar/resnet110", "detection/faster_rcnn_small_c4"):
        g = build(name, lower=False, passes=[]).graph
        assert (rows[name]["params"], rows[name]["macs"]) == (g.params(), g.macs()), name


def test_table_shows_names_sizes_and_titles() -> None:
    r = _cli("list")
    assert r.exit_code == 0, r.output
    for text in ("resnet152", "60.19M", "11.28G", "cifar/resnet1202", "19.42M", "CIFAR-10 ResNet-1202", "3x32x32"):
        assert text in r.stdout, text


def test_patterns_and_excludes_are_shell_wildcards() -> None:
    r = _cli("list", "resnet*", "plain*", "--exclude", "resnet1??", "--names")
    assert r.exit_code == 0 and r.stdout.split() == ["plain18", "plain34", "resnet18", "resnet34", "resnet50"]
    r = _cli("list", "cifar/resnet*", "--json")
    assert [m["name"] for m in json.loads(r.stdout)["models"]] == [
        f"cifar/resnet{n}" for n in (20, 32, 44, 56, 110, 1202)
    ]


def test_a_pattern_that_matches_nothing_exits_2_with_a_guess() -> None:
    r = _cli("list", "resnet")
    assert r.exit_code == 2 and "no catalogue name matches 'resnet'" in r.stderr
    assert "did you mean 'resnet18'?" in r.stderr and "'resnet*'" in r.stderr
    assert "Traceback" not in r.output


def test_list_models_follows_timm_and_computes_sizes_lazily_once() -> None:
    models._size.cache_clear()
    found = archc.list_models("resnet*", exclude_filters=["resnet1??"])
    assert [m.name for m in found] == ["resnet18", "resnet34", "resnet50"]
    assert archc.list_models(["plain*", "cifar/plain2*"]) == archc.list_models("plain*") + archc.list_models(
        "cifar/plain20"
    )
    assert models._size.cache_info().currsize == 0  # listing elaborates nothing
    r18 = found[0]
    assert r18.params == 11_689_512 and r18.macs == build("resnet18", lower=False).graph.macs()
    assert r18.net == "resnet18" and r18.path == catalog.entries()["resnet18"]
    assert archc.list_models("resnet18")[0].macs == r18.macs
    info = models._size.cache_info()
    assert (info.currsize, info.misses) == (1, 1)  # one elaboration per spec and process


@pytest.mark.parametrize("name", ["resnet50", "cifar/resnet56", "detection/faster_rcnn_r50_c4"])
def test_every_listed_name_is_accepted_by_compile_and_build(name: str) -> None:
    assert archc.list_models(name)[0].name == name
    assert build(name, lower=False).graph.name == archc.list_models(name)[0].net
