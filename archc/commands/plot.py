"""`archc plot`: training (dashed) and test (bold) error against iterations for runs, like Fig. 4 and Fig. 6."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from archc.errors import ArchcError, CheckpointError


def series(run: Path, metric: str) -> dict[str, Any]:
    """The train and test curves of one run directory for `metric`.

    Raises:
        CheckpointError: no metrics.jsonl, or no record carries `metric`.
    """
    from archc.train.runs import read_metrics

    recs = read_metrics(run / "metrics.jsonl")
    out: dict[str, Any] = {"run": run.name, "metric": metric}
    for split in ("train", "test"):
        pts = [(r["iter"], r[metric]) for r in recs if r.get("split") == split and metric in r]
        out[split] = {"iter": [p[0] for p in pts], "value": [p[1] for p in pts]}
    if not out["train"]["iter"] and not out["test"]["iter"]:
        keys = sorted({k for r in recs for k, v in r.items() if isinstance(v, float)})
        raise CheckpointError(f"{run}: no record has '{metric}'", hint=f"choose --metric from: {', '.join(keys)}")
    return out


def draw(curves: list[dict[str, Any]], out: Path, title: str | None, logy: bool, ylim: tuple | None) -> None:
    """Write the figure; the file type follows the suffix (png, svg, pdf)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "archc"  # the same SVG for the same data
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    percent = curves[0]["metric"].endswith("error")
    scale = 100.0 if percent else 1.0
    for i, c in enumerate(curves):
        colour = f"C{i % 10}"
        tr, te = c["train"], c["test"]
        if tr["iter"]:
            ax.plot(tr["iter"], [v * scale for v in tr["value"]], "--", color=colour, linewidth=1.0)
        if te["iter"]:
            ax.plot(te["iter"], [v * scale for v in te["value"]], "-", color=colour, linewidth=2.2, label=c["run"])
        elif tr["iter"]:
            ax.plot([], [], "-", color=colour, linewidth=2.2, label=c["run"])
    ax.set_xlabel("iter.")
    ax.set_ylabel(f"{curves[0]['metric']} (%)" if percent else curves[0]["metric"])
    if logy:
        ax.set_yscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title or "dashed: training, bold: test")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Date": None} if out.suffix.lower() == ".svg" else None)
    plt.close(fig)


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Image to write (.png/.svg/.pdf).")
@click.option("--metric", default="error", show_default=True, help="Record field to plot (e.g. loss, AP50).")
@click.option("--title", default=None, help="Figure title.")
@click.option("--logy", is_flag=True, help="Logarithmic y axis.")
@click.option("--ylim", nargs=2, type=float, default=None, metavar="LOW HIGH", help="y range (in %% for errors).")
@click.option("--json", "as_json", is_flag=True, help="Print the plotted series as JSON.")
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

    \b
    Examples:
      archc plot runs/plain20-0001 runs/resnet20-0001 -o curves.png
      archc plot runs/resnet110-0001 --logy -o r110.svg
      archc plot runs/resnet20-0001 --metric loss -o loss.png
      archc plot runs/resnet20-0001 --json
    """
    from archc.cli import _fail

    try:
        if out is None and not as_json:
            raise ArchcError("nothing to do", hint="give -o FILE to draw, or --json to print the curves")
        curves = [series(r, metric) for r in runs]
        if out is not None:
            if out.suffix.lower() not in (".png", ".svg", ".pdf"):
                raise ArchcError(f"cannot draw '{out}'", hint="name the file .png, .svg or .pdf")
            draw(curves, out, title, logy, ylim)
    except ArchcError as err:
        _fail(err)
        return
    if as_json:
        click.echo(json.dumps({"runs": curves, "train_style": "dashed", "test_style": "bold"}, indent=2))
    else:
        click.echo(f"wrote {out}")
