"""Compiler benchmarks: how long archc takes to turn specs into graphs and modules.

Measures, on the machine it runs on:

  a. parse + elaborate + passes of specs/cifar/resnet1202.arch (about 4,200 nodes), in a
     fresh process: the first (cold) run, which includes building the lark grammar (or
     reading its LALR tables from the per-user cache; the report says which), and the
     median of the runs after it.
  b. ``archc.compile("specs/resnet152.arch")`` against constructing the hand-written
     reference ResNet-152 of tests/reference_resnet.py. The reference has no weight
     init of its own, so the benchmark applies the init that archc's generated module
     runs (kaiming_normal_ fan_out for convs, BN weight 1 / bias 0). Both sides then do
     the same work. The runs alternate, after one warm-up of each.
  c. ``archc build specs/resnet152.arch`` end to end, as a subprocess (wall time).

It prints a markdown table with the measured values, the targets and pass/fail, plus
the machine. With --write it replaces the marked section of BENCHMARKS.md.

Usage:
    python benchmarks/bench_compiler.py [--runs-a 9] [--runs-b 7] [--runs-c 5] [--write] [--profile]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import machine_info, replace_section  # noqa: E402

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN = "<!-- bench_compiler:begin -->"
END = "<!-- bench_compiler:end -->"

CIFAR_SPEC = "specs/cifar/resnet1202.arch"
IMAGENET_SPEC = "specs/resnet152.arch"

# Targets (seconds, or a ratio).
TARGET_FRONTEND_S = 0.5
TARGET_COMPILE_RATIO = 1.3
TARGET_CLI_S = 5.0


# --- a. frontend + passes, in a fresh process ------------------------------------------------
def _frontend_worker(runs: int) -> None:
    """Runs in a child process; prints one JSON object."""
    os.chdir(ROOT)
    t0 = time.perf_counter()
    from archc.api import build

    t_import = time.perf_counter() - t0
    from archc.frontend import grammar_cache, parser

    tables = grammar_cache.cache_file(parser._GRAMMAR.read_text(), parser.LARK_OPTIONS)
    # the cold run reads the grammar's LALR tables when an earlier process cached them
    cached = tables is not None and tables.is_file()
    times, phases = [], []
    nodes = 0
    for _ in range(runs + 1):
        gc.collect()
        t = time.perf_counter()
        b = build(CIFAR_SPEC, lower=False)
        times.append(time.perf_counter() - t)
        phases.append(b.timings_ms)
        nodes = len(b.graph)
    elaborated = len(build(CIFAR_SPEC, lower=False, passes=[]).graph)  # before fusion shrinks it
    warm = times[1:]
    mid = sorted(range(len(warm)), key=warm.__getitem__)[len(warm) // 2]
    print(
        json.dumps(
            {
                "import_s": t_import,
                "grammar_cached": cached,
                "cold_s": times[0],
                "cold_phases_ms": phases[0],
                "median_s": statistics.median(warm),
                "min_s": min(warm),
                "median_phases_ms": phases[1:][mid],
                "runs": runs,
                "nodes": nodes,
                "elaborated_nodes": elaborated,
            }
        )
    )


def bench_frontend(runs: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--frontend-worker", str(runs)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- b. archc.compile vs the hand-written reference ------------------------------------------
def _reference_resnet152():
    """The reference ResNet-152 with the init that archc's generated modules apply."""
    from archc_torch.runtime import init_weights
    from tests.reference_resnet import resnet

    model = resnet(152)
    init_weights(model)
    return model


def _archc_resnet152():
    import archc

    return archc.compile(IMAGENET_SPEC)


def _timed(fn) -> float:
    gc.collect()
    t = time.perf_counter()
    model = fn()
    dt = time.perf_counter() - t
    del model
    return dt


def bench_compile(runs: int) -> dict:
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import torch

    a = _archc_resnet152()
    r = _reference_resnet152()
    params_a = sum(p.numel() for p in a.parameters())
    params_r = sum(p.numel() for p in r.parameters())
    same_keys = list(a.state_dict()) == list(r.state_dict())
    del a, r
    archc_s, ref_s = [], []
    for i in range(runs):
        # alternate which side goes first, so drift on the machine hits both alike
        if i % 2 == 0:
            archc_s.append(_timed(_archc_resnet152))
            ref_s.append(_timed(_reference_resnet152))
        else:
            ref_s.append(_timed(_reference_resnet152))
            archc_s.append(_timed(_archc_resnet152))
    ma, mr = statistics.median(archc_s), statistics.median(ref_s)
    return {
        "archc_median_s": ma,
        "reference_median_s": mr,
        "ratio": ma / mr,
        "archc_runs_s": archc_s,
        "reference_runs_s": ref_s,
        "runs": runs,
        "params_archc": params_a,
        "params_reference": params_r,
        "same_state_dict_keys": same_keys,
        "torch_threads": torch.get_num_threads(),
    }


def profile_compile(top: int = 25) -> str:
    """cProfile of one archc.compile of ResNet-152 (after a warm-up), sorted by cumulative time."""
    import cProfile
    import io
    import pstats

    _archc_resnet152()
    prof = cProfile.Profile()
    prof.enable()
    _archc_resnet152()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


# --- c. the CLI end to end -------------------------------------------------------------------
def _archc_command() -> list[str]:
    exe = Path(sys.executable).with_name("archc")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("archc")
    return [found] if found else [sys.executable, "-m", "archc"]


# What (c) cannot go below without archc: a fresh Python that imports torch, and one that also builds the
# hand-written ResNet-152 with the same init (b's reference) and counts its parameters, as `build` reports.
FLOOR_IMPORT = [sys.executable, "-c", "import torch"]
FLOOR_REFERENCE = [
    sys.executable,
    "-c",
    "import torch; from archc_torch.runtime import init_weights; from tests.reference_resnet import resnet; "
    "m = resnet(152); init_weights(m); print(sum(p.numel() for p in m.parameters()))",
]


def bench_cli(runs: int) -> dict:
    cmd = [*_archc_command(), "build", IMAGENET_SPEC]
    runs_of: dict[str, list[float]] = {"archc": [], "import": [], "reference": []}
    for _ in range(runs):  # alternating, so a change in the background load reaches all three
        for key, argv in (("archc", cmd), ("import", FLOOR_IMPORT), ("reference", FLOOR_REFERENCE)):
            t = time.perf_counter()
            subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            runs_of[key].append(time.perf_counter() - t)
    return {
        "median_s": statistics.median(runs_of["archc"]),
        "runs_s": runs_of["archc"],
        "import_median_s": statistics.median(runs_of["import"]),
        "reference_median_s": statistics.median(runs_of["reference"]),
        "runs": runs,
        "command": cmd,
    }


# --- report ----------------------------------------------------------------------------------
def _ok(passed: bool) -> str:
    return "pass" if passed else "**FAIL**"


def render(a: dict, b: dict, c: dict, m: dict, command: str) -> str:
    ph = a["median_phases_ms"]
    cph = a["cold_phases_ms"]
    rows = [
        (
            f"a. parse+elaborate+passes, `{CIFAR_SPEC}` ({a['elaborated_nodes']:,} nodes elaborated, "
            f"{a['nodes']:,} after the passes), median of {a['runs']}",
            f"{a['median_s']:.3f} s (parse {ph['parse']:.0f} / elaborate {ph['elaborate']:.0f} / "
            f"passes {ph['passes']:.0f} ms)",
            f"< {TARGET_FRONTEND_S} s",
            _ok(a["median_s"] < TARGET_FRONTEND_S),
        ),
        (
            "a. same, first (cold) run in a fresh process, grammar tables "
            + ("read from the per-user cache" if a["grammar_cached"] else "built (none cached yet)"),
            f"{a['cold_s']:.3f} s (parse {cph['parse']:.0f} / elaborate {cph['elaborate']:.0f} / "
            f"passes {cph['passes']:.0f} ms); `import archc.api` before it: {a['import_s']:.3f} s",
            f"< {TARGET_FRONTEND_S} s",
            _ok(a["cold_s"] < TARGET_FRONTEND_S),
        ),
        (
            f'b. `archc.compile("{IMAGENET_SPEC}")`, median of {b["runs"]} (alternating)',
            f"{b['archc_median_s']:.3f} s",
            "",
            "",
        ),
        (
            f"b. reference ResNet-152 (tests/reference_resnet.py) + same init, median of {b['runs']}",
            f"{b['reference_median_s']:.3f} s",
            "",
            "",
        ),
        (
            "b. ratio archc / reference",
            f"{b['ratio']:.2f}",
            f"<= {TARGET_COMPILE_RATIO}",
            _ok(b["ratio"] <= TARGET_COMPILE_RATIO),
        ),
        (
            f"c. `archc build {IMAGENET_SPEC}` end to end (subprocess wall time), median of {c['runs']}",
            f"{c['median_s']:.2f} s",
            f"< {TARGET_CLI_S} s",
            _ok(c["median_s"] < TARGET_CLI_S),
        ),
        (
            "c. floor: `python -c 'import torch'` (subprocess wall time), median, alternating with c",
            f"{c['import_median_s']:.2f} s",
            "",
            "",
        ),
        (
            "c. floor: a fresh Python that imports torch and builds the reference ResNet-152 + same init",
            f"{c['reference_median_s']:.2f} s",
            "",
            "",
        ),
    ]
    lines = [
        "| measurement | measured | target | result |",
        "| --- | --- | --- | --- |",
        *(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows),
        "",
        f"- command: `{command}`",
        f"- date: {m['date']}",
        f"- machine: {m['platform']}; {m['cpu']}; {m['cpu_count']} CPUs (torch uses {b['torch_threads']} threads)",
        f"- versions: Python {m['python']}, torch {m['torch']}",
        f"- load average when the run began (1, 5, 15 min): {m['load']} (other processes share the CPUs)",
        f"- b. runs (s): archc {', '.join(f'{x:.3f}' for x in b['archc_runs_s'])}; "
        f"reference {', '.join(f'{x:.3f}' for x in b['reference_runs_s'])}. "
        f"Parameters (archc / reference): {b['params_archc']:,} / {b['params_reference']:,}; "
        f"identical state_dict keys: {'yes' if b['same_state_dict_keys'] else 'no'}",
        f"- c. runs (s): {', '.join(f'{x:.2f}' for x in c['runs_s'])}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs-a", type=int, default=9, help="warm runs for (a), after the cold one")
    p.add_argument("--runs-b", type=int, default=7, help="alternating runs for (b), after a warm-up (>= 5)")
    p.add_argument("--runs-c", type=int, default=5, help="CLI runs for (c) (3-5)")
    p.add_argument("--write", action="store_true", help="replace the marked section of BENCHMARKS.md")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of archc.compile (ResNet-152)")
    p.add_argument("--frontend-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.frontend_worker is not None:
        _frontend_worker(args.frontend_worker)
        return 0
    if args.runs_b < 5:
        p.error("--runs-b must be at least 5")

    command = " ".join(["python", "benchmarks/bench_compiler.py", *(sys.argv[1:] if argv is None else argv)])
    info = machine_info()  # before the runs, so the load average is the background load
    print("a. frontend (fresh process) ...", file=sys.stderr)
    a = bench_frontend(args.runs_a)
    print("c. archc build as a subprocess ...", file=sys.stderr)
    c = bench_cli(args.runs_c)
    print("b. archc.compile vs reference ...", file=sys.stderr)
    b = bench_compile(args.runs_b)
    table = render(a, b, c, info, command)
    print(table)
    if args.profile:
        print(profile_compile())
    if args.write:
        replace_section(BEGIN, END, table, "## Compiler (CPU)")
        print(f"wrote {BENCHMARKS_MD.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
