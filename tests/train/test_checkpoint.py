"""Training checkpoints: exact round trip, RNG restore, atomic writes (also under SIGKILL), load errors."""

import json
import os
import random
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import archc
from archc.api import read_checkpoint
from archc.errors import CheckpointError
from archc.train.checkpoint import (
    FORMAT,
    TrainState,
    atomic_write,
    capture_rng,
    load_checkpoint,
    read_meta,
    restore_rng,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]
EMPTY_OPT = {"state": {}, "param_groups": []}


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(8, 3)
    )


def _optimizer(kind, model):
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    return torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)


def _steps(model, opt, n):
    """Train on batches drawn from the global generators, so the RNG state matters for the result."""
    for _ in range(n):
        x = torch.randn(16, 6) + float(np.random.rand()) * random.random()
        y = torch.randint(0, 3, (16,))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_round_trip_continues_bit_identically(tmp_path, kind):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    a = _net()
    oa = _optimizer(kind, a)
    _steps(a, oa, 3)
    path = tmp_path / "last.safetensors"
    meta = {"iteration": 3, "best": {"error": 0.25}, "spec": "x.arch", "world": 1}
    save_checkpoint(path, TrainState(a.state_dict(), oa.state_dict(), {"drops": 1}, capture_rng(), meta))
    _steps(a, oa, 4)  # the original run goes on ...

    torch.manual_seed(99)  # ... and a fresh process starts from unrelated generator states
    np.random.seed(99)
    random.seed(99)
    b = _net()
    ob = _optimizer(kind, b)
    s = load_checkpoint(path)
    b.load_state_dict(s.model)
    ob.load_state_dict(s.optimizer)
    restore_rng(s.rng)
    assert s.scheduler == {"drops": 1} and s.meta == meta
    assert ob.param_groups[0]["lr"] == oa.param_groups[0]["lr"]
    _steps(b, ob, 4)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    for (pa, sa), (pb, sb) in zip(oa.state_dict()["state"].items(), ob.state_dict()["state"].items(), strict=True):
        assert pa == pb and all(torch.equal(torch.as_tensor(sa[n]), torch.as_tensor(sb[n])) for n in sa)


def test_rng_restore_reproduces_random_numbers():
    state = capture_rng()
    want = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3))
    # the python/numpy parts survive a JSON round trip (that is how the checkpoint stores them)
    restore_rng(json.loads(json.dumps({k: v for k, v in state.items() if k != "torch"})) | {"torch": state["torch"]})
    got = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3))
    assert want[:4] == got[:4] and torch.equal(want[4], got[4])
    with pytest.raises(CheckpointError, match="random generator"):
        restore_rng({"python": [3]})


def test_checkpoint_is_a_weights_file(tmp_path):
    spec = ROOT / "specs/cifar/resnet20.arch"
    m = archc.compile(spec)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    path = tmp_path / "best.safetensors"
    save_checkpoint(path, TrainState(m.state_dict(), opt.state_dict(), {}, capture_rng(), {"iteration": 1}))
    raw = load_file(str(path))  # safetensors alone
    assert any(k.startswith("__train__.optim.state.") for k in raw) and "__train__.rng.torch" in raw
    assert "conv1.weight" in raw
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    assert header["format"] == FORMAT and json.loads(header["meta"]) == {"iteration": 1}
    weights = read_checkpoint(path)
    assert set(weights) == set(m.state_dict())
    again = archc.compile(spec, weights=path)
    assert torch.equal(again.state_dict()["fc.weight"], m.state_dict()["fc.weight"])


def test_shared_and_view_tensors_are_saved(tmp_path):
    w = torch.randn(4, 3)
    model = {"a": w, "tied": w, "row": w[1], "empty": torch.zeros(0)}
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, TrainState(model, EMPTY_OPT, {}, capture_rng(), {}))
    got = load_checkpoint(path).model
    assert torch.equal(got["tied"], w) and torch.equal(got["row"], w[1]) and got["empty"].shape == (0,)


def test_save_refuses_reserved_keys_and_non_json(tmp_path):
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(
            tmp_path / "x.safetensors", TrainState({"__train__.w": torch.zeros(1)}, EMPTY_OPT, {}, capture_rng(), {})
        )
    with pytest.raises(CheckpointError, match="run metadata"):
        save_checkpoint(tmp_path / "x.safetensors", TrainState({}, EMPTY_OPT, {}, capture_rng(), {"t": object()}))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, lambda t: t.write_bytes(b"old"))
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~_umask()  # not mkstemp's 0600

    def boom(t):
        t.write_bytes(b"partial")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_bytes() == b"old" and [q.name for q in tmp_path.iterdir()] == ["f.bin"]
    with pytest.raises(KeyboardInterrupt):  # also for interrupts, not just exceptions
        atomic_write(p, lambda t: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert p.read_bytes() == b"old" and [q.name for q in tmp_path.iterdir()] == ["f.bin"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


WRITER = """
import sys, time, torch
from pathlib import Path
from archc.train.checkpoint import TrainState, atomic_write, capture_rng, save_checkpoint
big = {"w": torch.randn(1_000_000)}
chunk = 1 << 16

def blob(i):
    def write(tmp):  # many small writes: a kill lands in the middle of the file's contents
        with open(tmp, "wb") as f:
            for _ in range(64):
                f.write(bytes([i % 256]) * chunk)
                f.flush()
                time.sleep(0.0005)  # the blob takes most of a round, so the kill usually lands in it
    return write

i = 0
while True:
    t0 = time.perf_counter()
    big["w"][0] = i
    state = TrainState(big, {"state": {}, "param_groups": []}, {}, capture_rng(), {"iteration": i})
    save_checkpoint(Path(sys.argv[1]) / "last.safetensors", state)
    atomic_write(Path(sys.argv[1]) / "blob.bin", blob(i))
    print(i, time.perf_counter() - t0, flush=True)
    i += 1
"""


@pytest.mark.parametrize("where", [0.25, 0.75])
def test_sigkill_during_writes_leaves_a_loadable_checkpoint(tmp_path, where):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        done = [proc.stdout.readline().split() for _ in range(3)]
        time.sleep(float(done[-1][1]) * where)  # part-way through the next round of writes
    finally:
        proc.kill()
        proc.wait()
    s = load_checkpoint(tmp_path / "last.safetensors")
    # the file is the last completed write or the one the kill interrupted after its rename, never a mix
    it = s.meta["iteration"]
    assert it >= int(done[-1][0]) and s.model["w"][0].item() == it and s.model["w"].shape == (1_000_000,)
    blob = (tmp_path / "blob.bin").read_bytes()
    assert len(blob) == 64 << 16 and blob == bytes([blob[0]]) * len(blob) and blob[0] >= int(done[-1][0]) % 256
    names = {q.name for q in tmp_path.iterdir()} - {"last.safetensors", "blob.bin"}
    assert len(names) <= 1  # at most the temp file the kill interrupted


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as e:
        load_checkpoint(tmp_path / "none.safetensors")
    assert "none.safetensors" in str(e.value) and e.value.hint
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*bad.safetensors"):
        load_checkpoint(bad)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not an archc training checkpoint"):
        load_checkpoint(plain)
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, TrainState({"w": torch.zeros(64)}, EMPTY_OPT, {}, capture_rng(), {}))
    data = good.read_bytes()
    for cut in (4, len(data) // 2, len(data) - 8):
        torn = tmp_path / f"torn{cut}.safetensors"
        torn.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"torn{cut}"):
            load_checkpoint(torn)
    future = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(2)}, str(future), metadata={"format": "archc-train/9"})
    with pytest.raises(CheckpointError, match="archc-train/9"):
        load_checkpoint(future)
    assert set(read_checkpoint(future)) == {"w"}
    partial = tmp_path / "partial.safetensors"
    save_file({"w": torch.zeros(2)}, str(partial), metadata={"format": FORMAT, "meta": "{}"})
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(partial)


def test_read_meta_reads_the_header_only(tmp_path):
    path = tmp_path / "last.safetensors"
    save_checkpoint(
        path,
        TrainState(
            {"w": torch.zeros(3)},
            {"state": {}, "param_groups": []},
            {},
            capture_rng(),
            {"iteration": 7, "class_names": ["a"]},
        ),
    )
    assert read_meta(path) == {"iteration": 7, "class_names": ["a"]}
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    assert read_meta(tmp_path / "plain.safetensors") is None and read_meta(tmp_path / "none.safetensors") is None
