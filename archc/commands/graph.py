"""`archc graph`: draw a spec's graph IR as DOT, SVG or PNG (Fig. 3 style labels)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import click

from archc.commands.options import fail, json_option, mode_option, parse_passes, parse_sets, passes_option, sets_option
from archc.errors import ArchcError

FORMATS = (".dot", ".gv", ".svg", ".png")
# graphviz draws PNGs at 96 dpi: a layer-depth ResNet-18 is then 448 px wide with small labels
PNG_DPI = 150


def _check_output(out: Path) -> str:
    """The output format from the suffix of `out`; for svg/png, check that `dot` is installed.

    Raises:
        ArchcError: an unknown suffix, or no graphviz `dot` to render with.
    """
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ArchcError(
            f"cannot tell the output format of '{out}' (suffix '{suffix or 'none'}')",
            hint="name the output NAME.svg, NAME.png or NAME.dot (DOT text, needs no graphviz)",
        )
    if suffix in (".svg", ".png") and shutil.which("dot") is None:
        raise ArchcError(
            f"writing {suffix} needs graphviz's 'dot' program, which is not on PATH",
            hint=f"install it (Debian/Ubuntu: apt-get update && apt-get install -y graphviz), "
            f"or write DOT text instead: -o {out.with_suffix('.dot')}",
        )
    return "dot" if suffix == ".gv" else suffix[1:]


def _write(text: str, out: Path, fmt: str, dpi: int | None = None) -> None:
    from archc.files import write_output

    if fmt == "dot":
        write_output(out, lambda t: t.write_text(text, encoding="utf-8"), "graph")
        return
    dot = shutil.which("dot") or "dot"

    def render(target: Path) -> None:
        args = [dot, f"-T{fmt}"] + ([f"-Gdpi={dpi}"] if dpi else [])
        proc = subprocess.run(args, input=text.encode(), capture_output=True, check=False)
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
            raise ArchcError(f"graphviz 'dot' failed to write {out}: {msg}", hint="write DOT text with -o NAME.dot")
        target.write_bytes(proc.stdout)

    write_output(out, render, "graph")


@click.command(short_help="Draw SPEC as DOT, SVG or PNG, labelled like the paper's Fig. 3.")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file; its suffix picks the format: .svg, .png (need graphviz) or .dot.",
)
@click.option(
    "--depth",
    type=click.Choice(["stage", "block", "layer"]),
    default="layer",
    show_default=True,
    help="Draw every layer, one node per block instance (layer1.0), or one per stage (layer1).",
)
@mode_option("train", "Pass pipeline whose result is drawn: eval shows BN folded into fused convs.")
@passes_option("Comma-separated pass pipeline (default: the mode's; '' for none).")
@sets_option()
@click.option(
    "--dpi",
    type=click.IntRange(min=10, max=1200),
    default=None,
    help=f"Resolution of a PNG (pixels per inch). [default: {PNG_DPI}]",
)
@json_option("Print what was written as one JSON object.")
def graph(
    spec: Path,
    out: Path,
    depth: str,
    mode: str,
    passes: str | None,
    sets: tuple[str, ...],
    dpi: int | None,
    as_json: bool,
) -> None:
    """Draw SPEC's graph, labelled like the paper's Fig. 3 ("3x3 conv, 128, /2").

    Edges carry the output shape of their producer ("64x56x56"). With --mode eval,
    fused ops are one node ("3x3 conv, 64 + bn + relu").

    \b
    Examples:
      archc graph specs/resnet18.arch -o resnet18.svg
      archc graph specs/resnet50.arch -o resnet50.png --depth block --mode eval
      archc graph specs/resnet18.arch -o resnet18.png --dpi 300
      archc graph specs/resnet152.arch -o resnet152.dot --depth stage
    """
    from archc.api import build
    from archc.viz import render
    from archc.viz import view as make_view

    try:
        fmt = _check_output(out)
        if dpi is not None and fmt != "png":
            raise ArchcError(f"--dpi sets a PNG's resolution; '{out}' is {fmt}", hint="drop --dpi, or write NAME.png")
        pipeline = parse_passes(passes)
        b = build(spec, mode=mode, overrides=parse_sets(sets), passes=pipeline, lower=False)
        v = make_view(b.graph, depth)
        if fmt == "png":
            dpi = dpi or PNG_DPI
        _write(render(v), out, fmt, dpi)
    except ArchcError as err:
        fail(err)
        return
    summary = {
        "name": b.graph.name,
        "spec": b.origin,
        "mode": mode,
        "depth": depth,
        "nodes": len(v.nodes),
        "edges": len(v.edges),
        "ir_nodes": len(b.graph),
        "format": fmt,
        "output": str(out),
        "dpi": dpi,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        click.echo(f"wrote {out} ({fmt}, {depth} depth: {len(v.nodes)} nodes, {len(v.edges)} edges)")
