"""torch's thread count from the CPUs a process may use: affinity, cgroup quotas, torchrun's processes."""

import os

import pytest
import torch

from archc import threads
from archc.threads import cgroup_cpu_limit, default_threads, torch_threads


def _tree(tmp_path, cgroup: str, files: dict[str, str]):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for rel, text in files.items():
        p = tmp_path / "sys/fs/cgroup" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_cgroup_v2_quota(tmp_path):
    root = _tree(tmp_path, "0::/job/a\n", {"job/a/cpu.max": "150000 100000\n"})
    assert cgroup_cpu_limit(root) == 1.5


def test_cgroup_v2_without_a_limit_and_at_the_root(tmp_path):
    root = _tree(tmp_path, "0::/not/mounted/here\n", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(root) is None
    (root / "sys/fs/cgroup/cpu.max").write_text("200000 100000\n")
    assert cgroup_cpu_limit(root) == 2.0


def test_cgroup_v1_quota(tmp_path):
    cg = "4:memory:/x\n3:cpu,cpuacct:/docker/1\n"
    root = _tree(
        tmp_path,
        cg,
        {"cpu,cpuacct/docker/1/cpu.cfs_quota_us": "50000", "cpu,cpuacct/docker/1/cpu.cfs_period_us": "100000"},
    )
    assert cgroup_cpu_limit(root) == 0.5
    (root / "sys/fs/cgroup/cpu,cpuacct/docker/1/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(root) is None


def test_no_cgroup_files(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None


def test_default_threads_follows_affinity_quota_and_torchrun(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(8)  # torch's own default caps the result
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5}, raising=False)
        monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
        monkeypatch.setattr(threads, "idle_cpus", lambda: None)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        assert default_threads() == 6
        monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
        assert default_threads() == 3  # a quota of 2.5 CPUs keeps 3 threads busy
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        assert default_threads() == 1  # 3 CPUs among 4 processes: never below 1
        monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert default_threads() == 3
        torch.set_num_threads(2)
        assert default_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_a_busy_machine_leaves_fewer_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
        monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        # a load up to the CPU count may be our own last run; past it, the fair share CPUs x CPUs / load
        for load, expected in ((0.2, 2), (1.0, 2), (2.0, 2), (2.5, 1), (11.7, 1)):
            monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
            assert threads.idle_cpus() == pytest.approx(2 - load)
            assert default_threads() == expected, load
            assert default_threads(load_aware=False) == 2
        # pinned to one of the CPUs, or held to a quota: the machine's load says nothing about ours
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
        assert threads.idle_cpus() is None and default_threads() == 1
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
        monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.0)
        assert threads.idle_cpus() is None and default_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_describe_says_how_many_and_why(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(threads, "idle_cpus", lambda: -9.7)
    monkeypatch.setattr(os, "getloadavg", lambda: (11.7, 10.0, 9.0))
    assert threads.describe(1) == "1 CPU thread (2 CPUs available, load average 11.7; --threads to choose)"
    monkeypatch.setattr(threads, "idle_cpus", lambda: None)
    assert threads.describe(2) == "2 CPU threads (2 CPUs available; --threads to choose)"


def test_train_eval_and_detect_run_with_threads(monkeypatch, tmp_path):
    from pathlib import Path

    from click.testing import CliRunner

    from archc.cli import main
    from archc.commands import detect, train
    from archc.commands import eval as eval_command

    seen = []

    def record(*_args, **_kwargs):
        seen.append(torch.get_num_threads())
        return [] if len(seen) == 3 else {}

    monkeypatch.setattr(train, "_train", record)
    monkeypatch.setattr(eval_command, "_eval_classifier", record)
    monkeypatch.setattr(detect, "_detect", record)
    spec = str(Path(__file__).resolve().parents[1] / "specs/cifar/resnet20.arch")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for args in (["train", spec], ["eval", spec, "--weights", "w.safetensors"], ["detect", spec, "x.png"]):
            args += ["--weights", "w.safetensors", "--json"] if args[0] == "detect" else ["--json"]
            r = CliRunner().invoke(main, [*args, "--threads", "1"], catch_exceptions=False)
            assert r.exit_code == 0, r.output
            assert torch.get_num_threads() == 2  # restored afterwards
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1, 1]
