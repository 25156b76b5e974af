"""Run directories and the metrics log: numbering, torn last lines, truncation on resume."""

import json
import threading

import pytest

from archc.errors import CheckpointError
from archc.train.runs import MetricsLog, new_run_dir, read_metrics


def test_new_run_dir_numbering(tmp_path):
    a, b = new_run_dir(tmp_path, "resnet20"), new_run_dir(tmp_path, "resnet20")
    assert (a.name, b.name) == ("resnet20-0001", "resnet20-0002") and a.is_dir() and b.is_dir()
    assert new_run_dir(tmp_path, "plain20").name == "plain20-0001"  # names are numbered separately
    (tmp_path / "resnet20-0007").mkdir()
    (tmp_path / "resnet20-notes").mkdir()
    assert new_run_dir(tmp_path, "resnet20").name == "resnet20-0008"  # after the highest, never reusing one
    assert new_run_dir(tmp_path, "res[n]et").name == "res[n]et-0001"  # no glob surprises
    with pytest.raises(CheckpointError, match="not a plain directory name"):
        new_run_dir(tmp_path, "../escape")


def test_new_run_dir_is_race_free(tmp_path):
    got, lock = [], threading.Lock()

    def claim():
        for _ in range(5):
            d = new_run_dir(tmp_path, "r")
            with lock:
                got.append(d.name)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [f"r-{i:04d}" for i in range(1, 21)]


def _records(path):
    return [(r["split"], r["iter"]) for r in read_metrics(path)]


def test_metrics_log_write_and_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for i in (10, 20, 30):
        log.write({"iter": i, "split": "train", "loss": 1.0 / i, "error": 0.5})
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0]) == {"iter": 10, "split": "train", "loss": 0.1, "error": 0.5}
    with open(path, "a") as f:
        f.write('{"iter": 40, "split": "tr')  # a run killed mid-write
    assert [i for _, i in _records(path)] == [10, 20, 30]
    # the resumed run's log drops the torn line instead of gluing its first record onto it
    MetricsLog(path).write({"iter": 31, "split": "test", "error": 0.4})
    assert _records(path) == [("train", 10), ("train", 20), ("train", 30), ("test", 31)]


def test_truncate_after(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for i in range(1, 7):
        log.write({"iter": i, "split": "train" if i % 3 else "test", "loss": float(i)})
    with open(path, "a") as f:
        f.write('{"iter": 7')
    log.truncate_after(4)
    assert _records(path) == [("train", 1), ("train", 2), ("test", 3), ("train", 4)]
    assert path.read_text().endswith("\n") and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    log.write({"iter": 5, "split": "train", "loss": 5.0})
    assert _records(path)[-1] == ("train", 5)
    MetricsLog(tmp_path / "none.jsonl").truncate_after(3)  # nothing logged yet: nothing to do
    assert not (tmp_path / "none.jsonl").exists()


def test_malformed_lines_are_errors_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iter": 1}\nnot json\n{"iter": 2}\n')
    with pytest.raises(CheckpointError, match=r"metrics.jsonl:2: not a metrics record") as e:
        read_metrics(path)
    assert e.value.hint
    path.write_text('{"iter": 1}\n[1, 2]\n')  # JSON, but not a record; complete lines are never "torn"
    with pytest.raises(CheckpointError, match=r"metrics.jsonl:2"):
        read_metrics(path)
    with pytest.raises(CheckpointError, match=r"metrics.jsonl:2"):
        MetricsLog(path).truncate_after(5)
    with pytest.raises(CheckpointError, match="no metrics log"):
        read_metrics(tmp_path / "missing.jsonl")
    path.write_text("")
    assert read_metrics(path) == []


def test_disabled_log_writes_nothing(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=False)
    log.write({"iter": 1, "split": "train"})
    log.truncate_after(0)
    assert not (tmp_path / "metrics.jsonl").exists()
