"""`archc bench`: img/s, peak memory and build time against eager PyTorch of the spec and torch.compile.

The measurements are archc.bench.runner's; this module parses options and prints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from archc.commands.options import (
    backend_option,
    fail,
    json_option,
    mode_option,
    parse_sets,
    sets_option,
    threads_option,
)
from archc.errors import ArchcError

EXIT_CANDIDATE_FAILED = 1


def _split(value: str, param: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not items:
        raise click.BadParameter("give at least one name", param_hint=param)
    return items


def _num(v: float | None, fmt: str, suffix: str = "") -> str:
    return "" if v is None else f"{v:{fmt}}{suffix}"


def print_report(r: dict[str, Any]) -> None:
    """The rich table of one `archc.bench.run` result, with its set-up and notes."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from archc.console import make_console

    console = make_console()
    dev = r["device"]
    threads = f", {dev['threads']} thread{'' if dev.get('threads') == 1 else 's'}" if dev["type"] == "cpu" else ""
    where = f"{dev['name']} ({dev['type']}{threads})"
    title = (
        f"{r['net']} ({r['spec']}): {r['mode']}, batch {r['batch']}, {r['dtype']}, "
        f"input {'x'.join(map(str, r['input_shape']))}, on {where}"
    )
    console.print(escape(title), highlight=False, soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("candidate", no_wrap=True)
    ran = {c["name"] for c in r["candidates"] if c["status"] == "ok"}
    # (header, row key, format): the ratio columns of the baselines that ran
    cols = [("img/s", "img_per_s", None)]
    cols += [("vs\neager", "speedup_vs_eager", "x")] if "eager" in ran else []
    cols += [("vs\nref", "speedup_vs_reference", "x")] if "reference" in ran else []
    cols += [("vs\ncompile", "speedup_vs_compile", "x")] if "torch.compile" in ran else []
    cols.append(("peak\nMiB", "peak_mem_mib", ",.0f"))
    cols += [("mem vs\neager", "mem_vs_eager", "x")] if "eager" in ran else []
    cols += [("mem vs\nref", "mem_vs_reference", "x")] if "reference" in ran else []
    cols += [
        ("build\ns", "build_s", ".3g"),
        ("1st\nstep s", "first_run_s", ".3g"),
        ("max\ndiff", "max_abs_diff", ".0e"),
    ]
    for header, _, _ in cols:
        table.add_column(header, justify="right", no_wrap=True)
    notes = []
    for c in r["candidates"]:
        if c["status"] != "ok":
            shown = "n/a" if c["status"] == "unavailable" else c["status"]
            table.add_row(escape(c["name"]), shown, *[""] * (len(cols) - 1), style="dim")
            notes.append(f"{c['name']}: {c['status']}: {c.get('error', '')}")
            continue
        cells = []
        for _, key, fmt in cols:
            v = c.get(key)
            if fmt is None:  # img/s
                cells.append(_num(v, ",.1f" if v < 1000 else ",.0f"))
            else:
                cells.append(_num(v, ".2f", "x") if fmt == "x" else _num(v, fmt))
        table.add_row(escape(c["name"]), *cells)
    console.print(table)
    comp = next((c for c in r["candidates"] if c["name"] == "torch.compile" and c["status"] == "ok"), None)
    base = r["baselines"]
    lines = ["baselines (the vs columns):", f"  eager: {base['eager']}, channels_last"]
    if r["reference"] is not None:
        lines.append(f"  ref: the hand-written net {r['reference']}")
    elif r.get("reference_note"):
        lines.append(f"  ref: none, {r['reference_note']}")
    if comp is not None:
        lines.append(f"  compile: {base['compile']}, mode {comp['compile_mode']}; its 1st step is the cold compile")
    if r.get("optimizer"):
        lines.append(f"train step: forward + cross-entropy + backward + {r['optimizer']}")
    lines.append(
        f"{r['iters']} timed steps (median) after the first step and {r['warmup']} warm-up; "
        f"peak memory: {r['memory_metric'] or 'not measurable here'}"
    )
    for c in r["candidates"]:
        if comp is not None and c.get("build_first_run_vs_compile") is not None:
            lines.append(
                f"{c['name']} build {c['build_s']:.2f} s, build + first run {c['build_first_run_s']:.2f} s; "
                f"torch.compile (mode {comp['compile_mode']}) cold compile + first run {comp['compile_s']:.2f} s: "
                f"{c['build_vs_compile']:.3f}x, {c['build_first_run_vs_compile']:.3f}x"
            )
        if c.get("max_abs_diff") is not None:
            if not any("max diff:" in line for line in lines):
                lines.append(f"max diff: fp32 {r['mode']}-mode forward at the same weights against {r['oracle']}:")
            lines.append(
                f"  {c['name']}: max abs diff {c['max_abs_diff']:.2e} (output scale {c['output_scale']:.2f})"
                + ("" if c["output_close"] else ": THE OUTPUTS DIFFER")
            )
    v = r["versions"]
    lines.append(
        "versions: "
        + ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "triton", "archc", "cuda", "cudnn") if v.get(k))
        + ("; TRITON_INTERPRET=1" if v.get("triton_interpret") else "")
    )
    for line in lines + notes:
        console.print(escape(line), highlight=False, soft_wrap=True)


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@backend_option("archc backends, comma-separated.", many=True)
@click.option(
    "--baseline",
    "baselines",
    default=None,
    help="Baselines, comma-separated: eager (the spec compiled with no optimisation passes: standard nn "
    "modules, channels_last + autocast), reference (the hand-written ResNet, where one matches the spec: "
    "the paper's nets), compile (torch.compile of eager), or none. "
    "[default: eager,reference,compile on a GPU; eager,reference on CPU, where the compile takes minutes]",
)
@mode_option("train")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True, help="Images per step.")
@click.option(
    "--dtype",
    type=click.Choice(["bf16", "fp32"]),
    default=None,
    help="bf16 runs forward and loss under autocast. [default: bf16 on a GPU, fp32 on CPU]",
)
@click.option("--iters", type=click.IntRange(min=1), default=10, show_default=True, help="Timed steps.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed steps before them.")
@click.option(
    "--compile-mode",
    default=None,
    help="torch.compile mode. [default: max-autotune for eval, torch's default for train]",
)
@sets_option()
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the weights and the batch.")
@threads_option
@json_option()
def bench(
    spec: Path,
    backends: str,
    baselines: str | None,
    mode: str,
    batch: int,
    dtype: str | None,
    iters: int,
    warmup: int,
    compile_mode: str | None,
    sets: tuple[str, ...],
    seed: int,
    threads: int | None,
    as_json: bool,
) -> None:
    """Measure SPEC's compiled module against eager PyTorch of the same spec (any spec).

    Prints img/s (median step), peak memory and their ratios against the baselines: eager
    (SPEC compiled with no optimisation passes, standard nn modules), the hand-written
    reference ResNet where one matches SPEC (the paper's nets), and torch.compile of eager;
    archc's build time against torch.compile's cold compile; and each candidate's largest
    output difference, at the same weights, from archc.ir.Interpreter running SPEC's graph.
    Runs on the GPU when there is one; the triton backend needs a GPU (or
    TRITON_INTERPRET=1) and is reported unavailable otherwise. Train mode needs a net that
    ends in a class vector. Exit status: 2 for a bad spec or option, 1 when a candidate
    failed or its output differs from the interpreter's.

    \b
    Examples:
      archc bench specs/resnet50.arch --backend torch,triton --mode eval --batch 256 --dtype bf16
      archc bench specs/cifar/resnet110.arch --baseline eager,compile --mode train --batch 128
      archc bench specs/cifar/resnet20.arch --mode eval --batch 8 --set input_size=3x16x16 --json
    """
    import torch

    from archc.bench.runner import run
    from archc.bench.workload import BenchConfig

    default_baselines = "eager,reference,compile" if torch.cuda.is_available() else "eager,reference"
    cfg = BenchConfig(
        spec=spec,
        backends=_split(backends, "--backend"),
        baselines=() if baselines == "none" else _split(baselines or default_baselines, "--baseline"),
        mode=mode,
        batch=batch,
        dtype=dtype,
        iters=iters,
        warmup=warmup,
        overrides=parse_sets(sets),
        compile_mode=compile_mode,
        seed=seed,
        threads=threads,
    )
    try:
        result = run(cfg, log=lambda line: click.echo(f"bench: {line}", err=True))
    except ArchcError as err:
        fail(err)
        return
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        print_report(result)
    if any(c["status"] == "failed" or c.get("output_close") is False for c in result["candidates"]):
        sys.exit(EXIT_CANDIDATE_FAILED)
