"""Training memory on CPU: the bytes a train step keeps alive from the forward for the backward.

Peak training memory is weights, gradients and optimizer state (fixed per net) plus the
activations that autograd saves in the forward and frees in the backward; at a large
batch the saved activations dominate. This benchmark counts them exactly, without a GPU:
every tensor that autograd saves during one forward and loss is seen through
torch.autograd.graph.saved_tensors_hooks, and the distinct storages among them are
summed, less the parameters' and buffers' own storages (the weights a conv saves are
alive anyway). A tensor saved by two ops (the ReLU output that ReLU and the next conv
both keep) counts once, as it does in memory.

Candidates, all from the same weights, channels_last, float64 on the CPU:

* eager: the hand-written reference net (archc.bench.reference), nn.BatchNorm2d + ReLU;
* archc[torch]: the torch backend's train module;
* archc[triton]: the triton backend's train module, with the BN-ReLU-conv units
  (archc_triton.bn_act_conv) and BNAct. Without a GPU the backend needs Triton's CPU
  interpreter (TRITON_INTERPRET=1, set here); in float64 its modules run the kernels'
  torch twin (bn_torch), which saves exactly the tensors the kernel path saves (the
  tests check it for the unit and BNAct in float32), so the count is the one a GPU run
  saves, in float64 bytes. float64 also lets every candidate's loss be compared with the
  eager one at rounding error.

Each candidate then runs its backward, so a unit that saved too little would fail here.
It prints a markdown table; with --write it replaces the marked section of BENCHMARKS.md.

Usage:
    python benchmarks/bench_memory.py [--spec specs/resnet50.arch] [--batch 8] [--size 224] [--write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the triton backend on CPU

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import machine_info, publish  # noqa: E402

BEGIN = "<!-- bench_memory:begin -->"
END = "<!-- bench_memory:end -->"
HEADING = "## Training memory: saved activations on CPU (issue 12)"


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    """Bytes of distinct storages autograd saves in one forward + cross-entropy, parameters excluded.

    Runs the backward afterwards (so the saved tensors are used and freed).

    Args:
        model: a module in train mode.
        x: the input batch.
        y: class targets.

    Returns:
        (saved bytes, the loss as a float).
    """
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    total = sum(storages.values())
    loss.backward()
    return total, loss.item()


def candidates(spec: str, size: int) -> dict[str, torch.nn.Module]:
    """eager, archc[torch] and archc[triton] train modules with the same float64 weights."""
    import archc
    from archc.api import build
    from archc.bench.reference import randomise, reference_for

    overrides = {"input_size": f"3x{size}x{size}"}
    graph = build(spec, mode="train", overrides=overrides, lower=False).graph
    torch.manual_seed(0)
    eager = reference_for(graph).make().double()
    randomise(eager, seed=1)
    state = eager.state_dict()
    out = {"eager": eager.to(memory_format=torch.channels_last)}
    for backend in ("torch", "triton"):
        m = archc.compile(spec, backend=backend, mode="train", overrides=overrides, weights=state)
        out[f"archc[{backend}]"] = m.double().to(memory_format=torch.channels_last)
    return out


def run(spec: str, batch: int, size: int) -> dict[str, Any]:
    """Saved bytes, loss and wall time of each candidate's step."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 3, size, size, generator=g, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last
    )
    rows: dict[str, Any] = {}
    y = None
    for name, model in candidates(spec, size).items():
        model.train()
        classes = int(model(x[:2]).shape[1])  # also primes one-time costs
        y = torch.randint(classes, (batch,), generator=g) if y is None else y  # the same targets for all
        model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        saved, loss = saved_activation_bytes(model, x, y)
        rows[name] = {"saved_bytes": saved, "loss": loss, "step_s": time.perf_counter() - t}
        del model
    return rows


def render(rows: dict[str, Any], spec: str, batch: int, size: int, command: str) -> str:
    """The markdown of the marked section."""
    info = machine_info()
    eager = rows["eager"]
    lines = [
        f"`{spec}`, batch {batch}, 3x{size}x{size}, float64, channels_last, train mode: one forward + "
        "cross-entropy, then backward.",
        "",
        "| candidate | saved activations (MiB) | vs eager | loss - eager loss |",
        "| --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        ratio = r["saved_bytes"] / eager["saved_bytes"]
        lines.append(f"| {name} | {r['saved_bytes'] / 2**20:,.1f} | {ratio:.3f}x | {r['loss'] - eager['loss']:.1e} |")
    lines += [
        "",
        "- measured: the distinct storages saved for backward (torch.autograd.graph.saved_tensors_hooks), "
        "parameters and buffers excluded; float64 bytes (a bf16 run saves 2-byte elements; not measured here)",
        f"- command: `{command}`",
        f"- date: {info['date']}",
        f"- machine: {info['platform']}; {info['cpu']}; {info['cpu_count']} CPUs",
        f"- versions: Python {info['python']}, torch {info['torch']}",
        "- step wall times (s, not a benchmark of speed: float64 on a shared CPU): "
        + ", ".join(f"{n} {r['step_s']:.1f}" for n, r in rows.items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default="specs/resnet50.arch")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--write", action="store_true", help="replace the bench_memory section of BENCHMARKS.md")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    rows = run(args.spec, args.batch, args.size)
    command = " ".join(["python", "benchmarks/bench_memory.py", *(sys.argv[1:] if argv is None else argv)])
    text = render(rows, args.spec, args.batch, args.size, command)
    publish(text, args.write, BEGIN, END, HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
