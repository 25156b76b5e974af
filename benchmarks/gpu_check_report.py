"""Render gpu_check.py's results.jsonl as the GPU-check section of BENCHMARKS.md.

Every figure in the section comes from the file; without one the section says "not
measured yet" in every cell, which is what BENCHMARKS.md holds until a GPU run happened.

Usage:
    python benchmarks/gpu_check_report.py [RESULTS.jsonl] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from report import publish  # noqa: E402

BEGIN = "<!-- gpu_check:begin -->"
END = "<!-- gpu_check:end -->"
HEADING = "## GPU check: correctness, throughput and memory in one device call (issue 12)"
NOT_MEASURED = "not measured yet"
CANDIDATES = ("eager", "archc[torch]", "archc[triton]", "torch.compile")


def load(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a results file (a torn last line, from a run cut short, is dropped)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def _cell(row: dict[str, Any] | None, eager: dict[str, Any] | None) -> str:
    if row is None:
        return NOT_MEASURED
    if row.get("status") not in ("ok", "pass"):
        return f"{row.get('status')}: {row.get('reason') or row.get('error', '')}".strip()
    text = f"{row['img_per_s']:,.1f} img/s"
    if eager and eager.get("status") == "ok" and row is not eager:
        text += f" ({row['img_per_s'] / eager['img_per_s']:.2f}x)"
    if row.get("peak_mib") is not None:
        mem = f"{row['peak_mib']:,.0f} MiB"
        if eager and eager.get("peak_mib") and row is not eager:
            mem += f" ({row['peak_mib'] / eager['peak_mib']:.2f}x)"
        text += f", {mem}"
    text += f", first step {row['first_step_s']} s"
    if "fallbacks" in row:
        text += f", {row['fallbacks']} fallbacks"
    return text


def render(rows: list[dict[str, Any]] | None, source: str = "") -> str:
    """The markdown of the marked section; rows None gives the not-measured-yet table."""
    rows = rows or []
    by = {(r["phase"], r["name"]): r for r in rows}
    first = next((r for r in rows if r["phase"] == "throughput" and "spec" in r), None)
    net = f"`{first['spec']}`, batch {first['batch']}" if first else "`specs/resnet50.arch`, batch 256"
    lines = [
        f"{net}, bf16 autocast, channels_last; median of CUDA-event step times after warm-up "
        "(in brackets: vs eager). Written by `benchmarks/gpu_check_report.py` from a `gpu_check.py` run.",
        "",
        "| candidate | train | eval |",
        "| --- | --- | --- |",
    ]
    for cand in CANDIDATES:
        cells = [
            _cell(by.get(("throughput", f"{cand} {m}")), by.get(("throughput", f"eager {m}")))
            for m in ("train", "eval")
        ]
        lines.append(f"| {cand} | {cells[0]} | {cells[1]} |")
    lines.append("")
    checks = [r for r in rows if r["phase"] in ("kernels", "resnet")]
    if not checks:
        lines.append(f"- correctness (kernels and ResNet-50 vs float64): {NOT_MEASURED}")
        lines.append(f"- date, device, versions: {NOT_MEASURED} (no GPU has been lent to a session for this check yet)")
        lines.append("- how to run it: docs/gpu-check.md")
        return "\n".join(lines) + "\n"
    counts: dict[str, int] = {}
    for r in checks:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines.append("- correctness checks: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for r in checks:
        if r["status"] not in ("pass", "skipped"):
            lines.append(f"  - {r['phase']} {r['name']}: {r['status']} {r.get('errors') or r.get('error', '')}")
    for mode in ("train", "eval"):
        r = by.get(("resnet", f"ResNet {mode} vs float64"))
        if r and r.get("summary"):
            lines.append(f"- {mode} step vs float64 (relative errors): {r['summary']}")
    env = by.get(("env", "versions"), {})
    lines += [
        f"- date: {env.get('date')}",
        f"- device: {env.get('gpu')} ({env.get('sms')} SMs, {env.get('gib')} GiB), capability {env.get('capability')}",
        f"- versions: Python {env.get('python')}, torch {env.get('torch')}, triton {env.get('triton')}, "
        f"CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}",
        f"- results: `{source}`; command: docs/gpu-check.md",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?", help="results.jsonl of a gpu_check.py run; none: the not-measured table")
    p.add_argument("--write", action="store_true", help="replace the gpu_check section of BENCHMARKS.md")
    args = p.parse_args(argv)
    rows = load(Path(args.results)) if args.results else None
    text = render(rows, args.results or "")
    publish(text, args.write, BEGIN, END, HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
