"""PassManager: ordering, lint after each pass, timings, dumps and errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from archc.api import build
from archc.cli import main
from archc.errors import ArchcError
from archc.ir import Graph, LintError
from archc.passes import PASSES, PIPELINES, PassManager, register


def test_records_and_dumps() -> None:
    b = build("specs/cifar/resnet20.arch", lower=False, passes=["dce"], dump_after=["dce"])
    (rec,) = b.passes.records
    assert rec.name == "dce" and rec.changes == 0 and rec.ms >= 0
    assert b.passes.dumps["dce"].startswith("graph resnet20:")


def test_unknown_pass_and_dump_of_a_pass_not_run() -> None:
    with pytest.raises(ArchcError, match="unknown pass 'dcee'") as e:
        PassManager(["dcee"])
    assert "did you mean 'dce'" in (e.value.hint or "")
    with pytest.raises(ArchcError, match="not in the pipeline"):
        PassManager([], dump_after=["dce"])


def test_a_pass_that_breaks_the_graph_is_caught_by_lint() -> None:
    @register("test_break_shapes", "corrupts a shape (test only)")
    def _break(graph: Graph) -> int:
        graph.node("conv1").shape = (1, 1, 1)
        return 1

    try:
        g = build("specs/cifar/resnet20.arch", lower=False).graph
        with pytest.raises(LintError, match="conv1"):
            PassManager(["test_break_shapes"]).run(g)
    finally:
        del PASSES["test_break_shapes"]


def test_passes_run_in_the_given_order() -> None:
    seen: list[str] = []
    for name in ("test_first", "test_second"):
        register(name, "records its name (test only)")(lambda g, name=name: seen.append(name) or 0)
    try:
        PassManager(["test_second", "test_first", "test_second"]).run(
            build("specs/cifar/resnet20.arch", lower=False).graph
        )
        assert seen == ["test_second", "test_first", "test_second"]
    finally:
        del PASSES["test_first"], PASSES["test_second"]


def test_a_pass_before_one_it_requires_is_refused() -> None:
    assert PASSES["fuse_eval"].requires == ("fold_bn",)
    with pytest.raises(ArchcError, match="pass 'fuse_eval' runs before 'fold_bn', which it requires") as e:
        PassManager(["dce", "fuse_eval", "fold_bn", "channels_last"])
    assert e.value.hint == "put fold_bn before fuse_eval: --passes dce,fold_bn,fuse_eval,channels_last"
    with pytest.raises(ArchcError, match="runs before 'fold_bn'"):
        PassManager(["fuse_eval", "fold_bn", "fuse_eval"])
    # a requirement orders passes, it does not insist on them: fuse_eval alone fuses conv+ReLU
    for ok in (PIPELINES["eval"], ["fuse_eval"], ["fold_bn", "fuse_eval", "fold_bn"]):
        PassManager(list(ok))


def test_cli_refuses_a_pipeline_out_of_order() -> None:
    r = CliRunner().invoke(main, ["build", "specs/cifar/resnet20.arch", "--passes", "fuse_eval,fold_bn"])
    assert r.exit_code == 2
    assert "pass 'fuse_eval' runs before 'fold_bn'" in r.output and "--passes fold_bn,fuse_eval" in r.output
    assert "Traceback" not in r.output
