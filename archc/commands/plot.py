"""`archc plot`: training (dashed) and test (bold) error against iterations for runs, like Fig. 4 and Fig. 6."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import click

from archc.commands.options import fail, json_option
from archc.errors import ArchcError, CheckpointError

SUFFIXES = (".png", ".svg", ".pdf")
# the paper's Fig. 4/6 convention: thin dashed training curves, bold solid test curves, one colour per run
STYLES = {"train": {"linestyle": "--", "linewidth": 1.0}, "test": {"linestyle": "-", "linewidth": 2.2}}
# the header fields that carry the time of writing: cleared so the same data gives the same bytes
NO_DATE = {".svg": {"Date": None}, ".pdf": {"CreationDate": None, "ModDate": None}, ".png": {}}


def series(run: Path, metric: str) -> dict[str, Any]:
    """The train and test curves of one run directory for `metric`.

    Args:
        run: a run directory holding metrics.jsonl.
        metric: the record field to plot, e.g. "error", "loss", "AP50".

    Returns:
        {"run": dir name, "metric": metric, "percent": bool, "train"/"test": {"iter": [...], "value": [...],
        "style": {...}}}; values as recorded (fractions for errors and APs, drawn in percent when "percent"),
        records without the metric skipped.

    Raises:
        CheckpointError: RUN is not a directory, has no metrics.jsonl, or no record carries `metric`.
    """
    from archc.train.runs import read_metrics

    if not run.is_dir():
        raise CheckpointError(f"{run} is not a run directory", hint="give directories written by archc train")
    log = run / "metrics.jsonl"
    if not log.is_file():
        raise CheckpointError(
            f"no metrics log in {run} (metrics.jsonl)",
            hint="give a run directory written by archc train (runs/NAME-NNNN)",
        )
    from archc.train.progress import is_percent

    recs = read_metrics(log)
    # errors and COCO APs are fractions, drawn in percent as archc train and archc eval print them
    out: dict[str, Any] = {"run": run.name, "metric": metric, "percent": is_percent(metric)}
    for split in ("train", "test"):
        pts = [
            (r["iter"], float(r[metric]))
            for r in recs
            if r.get("split") == split and _number(r.get("iter")) and _number(r.get(metric))
        ]
        out[split] = {"iter": [p[0] for p in pts], "value": [p[1] for p in pts], "style": dict(STYLES[split])}
    if not out["train"]["iter"] and not out["test"]["iter"]:
        keys = sorted({k for r in recs for k, v in r.items() if k != "iter" and _number(v)})
        raise CheckpointError(
            f"{log}: no record has the metric '{metric}'",
            hint=f"choose --metric from: {', '.join(keys)}" if keys else "the log has no numeric records yet",
        )
    return out


def _number(v: Any) -> bool:
    """Whether `v` can be a point on a curve (bools and NaN/inf are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_labels(runs: list[Path]) -> list[str]:
    """Legend names for run directories: the shortest path suffix that tells each apart from the others.

    `a/resnet20-0001` and `b/resnet20-0001` become "a/resnet20-0001" and "b/resnet20-0001"; runs with
    different directory names keep just the name. The same directory given twice keeps one label.
    """
    parts = [Path(os.path.abspath(r)).parts for r in runs]
    depth = [1] * len(runs)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        grew = False
        for i, label in enumerate(labels):
            clash = any(labels[j] == label and parts[j] != parts[i] for j in range(len(runs)))
            if clash and depth[i] < len(parts[i]):
                depth[i] += 1
                grew = True
        if not grew:
            return labels


def _default_title(curves: list[dict[str, Any]]) -> str:
    """Which line style is which, for the splits that are drawn."""
    train = any(c["train"]["iter"] for c in curves)
    test = any(c["test"]["iter"] for c in curves)
    if train and test:
        return "dashed: training, bold: test"
    return "training" if train else "test"


def draw(
    curves: list[dict[str, Any]],
    out: Path,
    title: str | None = None,
    logy: bool = False,
    ylim: tuple[float, float] | None = None,
) -> None:
    """Write the figure; the file type follows the suffix (.png, .svg, .pdf).

    Args:
        curves: series() of each run, in legend order; an optional "color" per run (default: the cycle).
        out: the image file.
        title: the figure title (default: says which line style is which).
        logy: logarithmic y axis.
        ylim: the y range, in percent for error metrics.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric = curves[0]["metric"]
    scale = 100.0 if curves[0]["percent"] else 1.0
    # a Figure with its own Agg canvas: no pyplot, so no display backend and no global figure state
    with matplotlib.rc_context({"svg.hashsalt": "archc", "pdf.compression": 6}):
        fig = Figure(figsize=(7, 4.5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for i, c in enumerate(curves):
            colour = c.get("color", f"C{i % 10}")
            for split in ("train", "test"):
                s = c[split]
                if s["iter"]:
                    label = c["run"] if split == "test" or not c["test"]["iter"] else None
                    ax.plot(s["iter"], [v * scale for v in s["value"]], color=colour, label=label, **s["style"])
        ax.set_xlabel("iter.")
        ax.set_ylabel(f"{metric} (%)" if scale != 1.0 else metric)
        if logy:
            ax.set_yscale("log")
        if ylim:
            ax.set_ylim(*ylim)
        ax.set_title(title or _default_title(curves))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        from archc.files import write_output

        fmt, meta = out.suffix.lower()[1:], NO_DATE[out.suffix.lower()] or None
        write_output(out, lambda t: fig.savefig(t, format=fmt, metadata=meta), "figure")


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Image to write (.png/.svg/.pdf).")
@click.option("--metric", default="error", show_default=True, help="Record field to plot (e.g. loss, AP, AP50).")
@click.option("--title", default=None, help="Figure title.")
@click.option("--logy", is_flag=True, help="Logarithmic y axis.")
@click.option("--ylim", nargs=2, type=float, default=None, metavar="LOW HIGH", help="y range (in percent for errors).")
@json_option("Print the plotted series as JSON (with -o: as well).")
def plot(
    runs: tuple[Path, ...],
    out: Path | None,
    metric: str,
    title: str | None,
    logy: bool,
    ylim: tuple[float, float] | None,
    as_json: bool,
) -> None:
    """Plot training (dashed) and test (bold) curves of RUNS against iterations, like the paper's Fig. 4/6.

    One colour per run, the legend names the run directories (with as much of their paths as tells them
    apart); errors and APs are drawn in percent.

    \b
    Examples:
      archc plot runs/plain20-0001 runs/resnet20-0001 -o curves.png
      archc plot runs/resnet110-0001 --logy -o r110.svg
      archc plot runs/resnet20-0001 --metric loss -o loss.png
      archc plot runs/faster_rcnn-0001 --metric AP50 -o ap.pdf
      archc plot runs/resnet20-0001 --json
    """

    try:
        if out is None and not as_json:
            raise ArchcError("nothing to do", hint="give -o FILE to draw, or --json to print the curves")
        if out is not None and out.suffix.lower() not in SUFFIXES:
            raise ArchcError(f"cannot draw '{out}': unknown image type", hint="name the file .png, .svg or .pdf")
        if ylim is not None and logy and min(ylim) <= 0:
            raise ArchcError(f"--ylim {ylim[0]:g} {ylim[1]:g} with --logy", hint="a log axis needs LOW > 0")
        curves = [series(r, metric) for r in runs]
        for i, (c, label) in enumerate(zip(curves, run_labels(list(runs)), strict=True)):
            c["run"], c["path"] = label, str(runs[i])
            c["color"] = f"C{i % 10}"  # matplotlib's default cycle, named so --json says which line is which
        if out is not None:
            draw(curves, out, title, logy, ylim)
    except ArchcError as err:
        fail(err)
        return
    if as_json:
        click.echo(json.dumps({"runs": curves, "train_style": "dashed", "test_style": "bold"}, indent=2))
        if out is not None:
            click.echo(f"wrote {out}", err=True)
    else:
        click.echo(f"wrote {out}")
