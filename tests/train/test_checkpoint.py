"""Checkpoints: exact round trip, atomic writes (also under SIGKILL), no unpickling, run dirs, metrics."""

import json
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

import archc
from archc.api import read_checkpoint
from archc.errors import CheckpointError
from archc.train.checkpoint import TrainState, atomic_write, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from archc.train.runs import MetricsLog, new_run_dir, read_metrics


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _steps(model, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_round_trip_continues_bit_identically(tmp_path, kind):
    def make(model):
        if kind == "sgd":
            return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        return torch.optim.Adam(model.parameters(), lr=1e-2)

    a = _net()
    oa = make(a)
    _steps(a, oa, 3, seed=1)
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, TrainState(a.state_dict(), oa.state_dict(), {"drops": 1}, capture_rng(), {"iteration": 3}))
    b = _net()
    ob = make(b)
    s = load_checkpoint(path)
    b.load_state_dict(s.model)
    ob.load_state_dict(s.optimizer)
    assert s.scheduler == {"drops": 1} and s.meta == {"iteration": 3}
    _steps(a, oa, 4, seed=2)
    _steps(b, ob, 4, seed=2)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_rng_restore_reproduces_random_numbers():
    import random

    import numpy as np

    state = capture_rng()
    want = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(json.loads(json.dumps({k: v for k, v in state.items() if k != "torch"})) | {"torch": state["torch"]})
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert want[0] == got[0] and want[1] == got[1] and torch.equal(want[2], got[2])


def test_checkpoint_is_a_weights_file(tmp_path):
    spec = "specs/cifar/resnet20.arch"
    m = archc.compile(spec)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    path = tmp_path / "best.safetensors"
    save_checkpoint(path, TrainState(m.state_dict(), opt.state_dict(), {}, capture_rng(), {"iteration": 1}))
    raw = load_file(str(path))
    assert any(k.startswith("__train__.optim.") for k in raw) and "conv1.weight" in raw
    weights = read_checkpoint(path)
    assert set(weights) == set(m.state_dict())
    again = archc.compile(spec, weights=path)
    assert torch.equal(again.state_dict()["fc.weight"], m.state_dict()["fc.weight"])


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, lambda t: t.write_bytes(b"old"))

    def boom(t):
        t.write_bytes(b"partial")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_bytes() == b"old" and [q.name for q in tmp_path.iterdir()] == ["f.bin"]


WRITER = """
import sys, torch
from archc.train.checkpoint import TrainState, save_checkpoint
big = {"w": torch.randn(2_000_000)}
i = 0
while True:
    save_checkpoint(sys.argv[1], TrainState(big, {"state": {}, "param_groups": []}, {}, {"python": [3, [0], None],
                    "numpy": ["MT19937", [0] * 624, 0, 0, 0.0], "torch": torch.get_rng_state()}, {"iteration": i}))
    print(i, flush=True)
    i += 1
"""


def test_sigkill_during_writes_leaves_a_loadable_checkpoint(tmp_path):
    p = tmp_path / "last.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(p)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    s = load_checkpoint(p)
    assert s.model["w"].shape == (2_000_000,) and s.meta["iteration"] >= 0
    leftovers = [q for q in tmp_path.iterdir() if q.name.endswith(".tmp")]
    assert len(leftovers) <= 1  # at most the temp file the kill interrupted; never the checkpoint itself


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(bad)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not an archc training checkpoint"):
        load_checkpoint(plain)
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, TrainState({"w": torch.zeros(2)}, {"state": {}, "param_groups": []}, {}, capture_rng(), {}))
    good.write_bytes(good.read_bytes()[:-4])
    with pytest.raises(CheckpointError):
        load_checkpoint(good)


def test_run_dirs_and_metrics_log(tmp_path):
    a, b = new_run_dir(tmp_path, "resnet20"), new_run_dir(tmp_path, "resnet20")
    assert (a.name, b.name) == ("resnet20-0001", "resnet20-0002")
    log = MetricsLog(a / "metrics.jsonl")
    for i in (10, 20, 30):
        log.write({"iter": i, "split": "train", "loss": 1.0 / i})
    with open(a / "metrics.jsonl", "a") as f:
        f.write('{"iter": 40, "spl')  # a torn last line from a killed run
    assert [r["iter"] for r in read_metrics(a / "metrics.jsonl")] == [10, 20, 30]
    log.truncate_after(20)
    assert [r["iter"] for r in read_metrics(a / "metrics.jsonl")] == [10, 20]
    (b / "metrics.jsonl").write_text('{"iter": 1}\nnot json\n{"iter": 2}\n')
    with pytest.raises(CheckpointError, match="metrics.jsonl:2"):
        read_metrics(b / "metrics.jsonl")
    MetricsLog(b / "other.jsonl", enabled=False).write({"iter": 1})
    assert not (b / "other.jsonl").exists()
