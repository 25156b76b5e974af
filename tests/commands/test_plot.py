"""`archc plot`: Fig. 4/6-style curves from run directories, JSON series, errors."""

import json

import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.commands.plot import plot
from archc.train.runs import MetricsLog

PNG = b"\x89PNG\r\n\x1a\n"


def _run_dir(root, name, *, base, detection=False):
    """A synthetic run: training records every 10 iterations, test records every 30."""
    d = root / name
    d.mkdir()
    log = MetricsLog(d / "metrics.jsonl")
    for it in range(10, 91, 10):
        log.write({"iter": it, "split": "train", "loss": 2.0 / it, "error": base / it, "lr": 0.1, "epoch": it / 50})
        if it % 30 == 0:
            test = {"AP": 0.1 + it / 1000, "AP50": 0.2 + it / 1000} if detection else {"error": base / it + 0.05}
            log.write({"iter": it, "split": "test", "loss": 2.5 / it, **test})
    return d


def _invoke(args):
    return CliRunner().invoke(main, ["plot", *map(str, args)], catch_exceptions=False)


def test_png_and_json_of_two_runs(tmp_path):
    a = _run_dir(tmp_path, "plain20-0001", base=3.0)
    b = _run_dir(tmp_path, "resnet20-0001", base=2.0)
    out = tmp_path / "fig" / "curves.png"
    r = _invoke([a, b, "-o", out, "--title", "CIFAR-10"])
    assert r.exit_code == 0, r.output
    data = out.read_bytes()
    assert data[:8] == PNG and len(data) > 5000 and f"wrote {out}" in r.output

    j = _invoke([a, b, "--json"])
    assert j.exit_code == 0, j.output
    doc = json.loads(j.stdout)
    assert (doc["train_style"], doc["test_style"]) == ("dashed", "bold")
    runs = doc["runs"]
    assert [c["run"] for c in runs] == ["plain20-0001", "resnet20-0001"]
    assert [c["color"] for c in runs] == ["C0", "C1"]  # one colour per run
    for c, base in zip(runs, (3.0, 2.0), strict=True):
        assert c["metric"] == "error" and c["percent"] is True
        assert c["train"]["iter"] == list(range(10, 91, 10)) and c["test"]["iter"] == [30, 60, 90]
        assert c["train"]["value"] == pytest.approx([base / i for i in range(10, 91, 10)])
        assert c["train"]["style"]["linestyle"] == "--" and c["test"]["style"]["linestyle"] == "-"
        assert c["test"]["style"]["linewidth"] > c["train"]["style"]["linewidth"]  # bold test curves


def test_output_is_deterministic_per_format(tmp_path):
    a = _run_dir(tmp_path, "resnet20-0001", base=2.0)
    for suffix, magic in ((".png", PNG), (".svg", b"<?xml"), (".pdf", b"%PDF")):
        first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
        for path in (first, second):
            assert _invoke([a, "-o", path, "--logy", "--ylim", "1", "100"]).exit_code == 0
        assert first.read_bytes().startswith(magic)
        assert first.read_bytes() == second.read_bytes(), suffix


def test_other_metrics(tmp_path):
    det = _run_dir(tmp_path, "faster-0001", base=1.0, detection=True)
    doc = json.loads(_invoke([det, "--metric", "AP50", "--json"]).stdout)
    c = doc["runs"][0]
    # APs are fractions in the log, drawn in percent as archc eval prints them
    assert c["percent"] is True and c["train"]["iter"] == [] and c["test"]["value"] == pytest.approx([0.23, 0.26, 0.29])
    r = _invoke([det, "--metric", "loss", "-o", tmp_path / "loss.png", "--json"])
    assert r.exit_code == 0 and (tmp_path / "loss.png").read_bytes()[:8] == PNG
    assert json.loads(r.stdout)["runs"][0]["train"]["iter"] == list(range(10, 91, 10))


def test_errors_exit_2_with_a_message(tmp_path):
    good = _run_dir(tmp_path, "resnet20-0001", base=2.0)
    empty = tmp_path / "empty-0001"
    empty.mkdir()
    cases = [
        ([empty, "-o", tmp_path / "x.png"], "no metrics log in"),
        ([tmp_path / "nowhere", "--json"], "is not a run directory"),
        ([good, "--metric", "top5", "--json"], "no record has the metric 'top5'"),
        ([good, "-o", tmp_path / "x.jpg"], "unknown image type"),
        ([good], "nothing to do"),
        ([good, "-o", tmp_path / "x.png", "--logy", "--ylim", "0", "10"], "log axis"),
    ]
    for args, message in cases:
        r = _invoke(args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, r.output
    r = _invoke([good, "--metric", "top5", "--json"])
    assert "choose --metric from: epoch, error, loss, lr" in r.output
    (good / "metrics.jsonl").write_text('{"iter": 1, "split": "train", "error": 0.5}\ngarbage\n')
    r = _invoke([good, "--json"])
    assert r.exit_code == 2 and "metrics.jsonl:2" in r.output
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.jpg").exists()


def test_help_has_examples():
    r = CliRunner().invoke(plot, ["--help"])
    assert r.exit_code == 0 and "archc plot runs/plain20-0001 runs/resnet20-0001 -o curves.png" in r.output
    assert "%%" not in r.output


def test_same_run_names_in_different_folders_get_distinct_labels(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "x").mkdir(parents=True)
    (tmp_path / "c" / "x").mkdir(parents=True)
    one = _run_dir(tmp_path / "a", "resnet20-0001", base=2.0)
    two = _run_dir(tmp_path / "b" / "x", "resnet20-0001", base=3.0)
    three = _run_dir(tmp_path / "c" / "x", "resnet20-0001", base=4.0)
    other = _run_dir(tmp_path / "a", "plain20-0001", base=3.0)
    doc = json.loads(_invoke([one, two, three, other, "--json"]).stdout)
    assert [c["run"] for c in doc["runs"]] == [
        "a/resnet20-0001",
        "b/x/resnet20-0001",
        "c/x/resnet20-0001",
        "plain20-0001",
    ]
    assert [c["path"] for c in doc["runs"]] == [str(p) for p in (one, two, three, other)]
    svg = tmp_path / "same.svg"
    assert _invoke([one, two, "-o", svg]).exit_code == 0
    text = svg.read_text()
    assert "<!-- a/resnet20-0001 -->" in text and "<!-- x/resnet20-0001 -->" in text  # the shortest suffix


def test_ap_in_percent_and_no_training_legend_without_training_curves(tmp_path):
    det = _run_dir(tmp_path, "faster-0001", base=1.0, detection=True)
    svg = tmp_path / "ap.svg"
    assert _invoke([det, "--metric", "AP50", "-o", svg]).exit_code == 0
    text = svg.read_text()  # matplotlib writes each text as a comment before its glyphs
    assert "<!-- AP50 (%) -->" in text and "<!-- test -->" in text and "dashed" not in text
    both = tmp_path / "err.svg"
    assert _invoke([_run_dir(tmp_path, "r-0001", base=2.0), "-o", both]).exit_code == 0
    assert "<!-- dashed: training, bold: test -->" in both.read_text()
