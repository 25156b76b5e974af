"""`archc diff`: what changes between two specs, or one spec under two sets of overrides.

Per stage (Graph.stages()): output shape, params and multiply-adds of both sides with
the deltas; the layers only one side has; the changed op, attributes and output shape of
layers both have; and the totals. Stages and layers pair by their place in the net (see
compare()). Layers are compared as the spec wrote them (no passes) unless --mode picks a
pass pipeline.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import click

from archc.commands.options import fail, json_option, mode_option, parse_sets, sets_option
from archc.errors import ArchcError
from archc.units import si

LIST_LIMIT = 40  # layers shown per list in the text output (--json lists all)


def _elaborate(spec: Path, overrides: dict[str, str], mode: str) -> Any:
    from archc.api import build

    if mode == "spec":
        return build(spec, overrides=overrides, passes=[], lower=False).graph
    return build(spec, mode=mode, overrides=overrides, lower=False).graph


def _value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _key(name: str, op: str) -> str:
    """What a layer is matched on: its dotted name, with a generated leaf (`relu`, `relu_1`) as just its op.

    The frontend numbers unlabelled statements per scope in order (`relu`, `relu_1`, ...), so the same
    name can be the stem's ReLU in one net and the last one in the other; their ops and places match.
    """
    scope, _, leaf = name.rpartition(".")
    if re.fullmatch(rf"{re.escape(op)}(_\d+)?", leaf):
        leaf = f"<{op}>"
    return f"{scope}.{leaf}" if scope else leaf


def _pair(a: list[str], b: list[str]) -> list[tuple[int | None, int | None]]:
    """Both key sequences aligned in order: (i, j) for a pair, (i, None) / (None, j) for one side only."""
    out: list[tuple[int | None, int | None]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            out += list(zip(range(i1, i2), range(j1, j2), strict=True))
        else:
            out += [(i, None) for i in range(i1, i2)] + [(None, j) for j in range(j1, j2)]
    return out


def _stage_ops(g: Any) -> dict[str, str]:
    """Each stage's op when it is one layer (`relu`), for matching generated stage names."""
    ops: dict[str, list[str]] = {}
    for n in g.nodes():
        ops.setdefault(n.stage, []).append(n.op)
    return {k: v[0] if len(v) == 1 else "" for k, v in ops.items()}


def compare(ga: Any, gb: Any) -> dict[str, Any]:
    """The differences between two graphs, as a JSON-ready dict.

    Stages and layers are paired by their place in the net: both sequences are aligned on their names
    (a generated name like `relu_1` counts as its op), so rows of the same layer line up even where
    the nets number their unnamed layers differently. A pair whose names differ has "name_a".
    """
    la, lb = ga.stages(), gb.stages()
    oa, ob = _stage_ops(ga), _stage_ops(gb)
    stages = []
    for i, j in _pair([_key(s["name"], oa[s["name"]]) for s in la], [_key(s["name"], ob[s["name"]]) for s in lb]):
        a, b = (None if i is None else la[i]), (None if j is None else lb[j])
        row: dict[str, Any] = {"name": (b or a)["name"], "a": None, "b": None}
        if a is not None and b is not None and a["name"] != b["name"]:
            row["name_a"] = a["name"]
        for side, s in (("a", a), ("b", b)):
            if s is not None:
                row[side] = {"output_shape": s["output_shape"], "params": s["params"], "macs": s["macs"]}
        row["delta_params"] = (b["params"] if b else 0) - (a["params"] if a else 0)
        row["delta_macs"] = (b["macs"] if b else 0) - (a["macs"] if a else 0)
        row["changed"] = a is None or b is None or row["a"] != row["b"]
        stages.append(row)
    na, nb = ga.nodes(), gb.nodes()
    pairs = _pair([_key(n.name, n.op) for n in na], [_key(n.name, n.op) for n in nb])
    to_b = {na[i].name: nb[j].name for i, j in pairs if i is not None and j is not None}

    def layer(n: Any) -> dict[str, Any]:
        return {"name": n.name, "op": n.op, "shape": list(n.shape), "params": n.params, "loc": n.loc}

    only_a = [layer(na[i]) for i, j in pairs if j is None]
    only_b = [layer(nb[j]) for i, j in pairs if i is None]
    changed = []
    for i, j in pairs:
        if i is None or j is None:
            continue
        a, b = na[i], nb[j]
        diffs: dict[str, list[Any]] = {}
        if a.op != b.op:
            diffs["op"] = [a.op, b.op]
        for key in sorted(set(a.attrs) | set(b.attrs)):
            va, vb = _value(a.attrs.get(key)), _value(b.attrs.get(key))
            if va != vb:
                diffs[key] = [va, vb]
        # inputs count as the same when they are paired layers, whatever each net calls them
        if [to_b.get(x, x) for x in a.inputs] != list(b.inputs):
            diffs["inputs"] = [list(a.inputs), list(b.inputs)]
        if a.shape != b.shape:
            diffs["shape"] = [list(a.shape), list(b.shape)]
        if a.params != b.params:
            diffs["params"] = [a.params, b.params]
        if diffs:
            entry = {"name": b.name, "op": b.op, "loc": b.loc, "changes": diffs}
            changed.append(entry if a.name == b.name else {"name_a": a.name, **entry})

    def totals(g: Any) -> dict[str, Any]:
        return {
            "params": g.params(),
            "macs": g.macs(),
            "layers": len(g) - 1,
            "input_shape": list(g.input.shape),
            "output_shape": list(g.output.shape),
        }

    ta, tb = totals(ga), totals(gb)
    return {
        "stages": stages,
        "only_in_a": only_a,
        "only_in_b": only_b,
        "changed": changed,
        "totals": {
            "a": ta,
            "b": tb,
            "delta_params": tb["params"] - ta["params"],
            "delta_macs": tb["macs"] - ta["macs"],
        },
    }


def _shape(s: list[int] | None) -> str:
    return "-" if s is None else "x".join(map(str, s))


def _signed(n: int) -> str:
    return "0" if n == 0 else f"{n:+,}"


def _delta(delta: int, base: int) -> str:
    """`+173,824 (+174 k, +0.80%)`; `0` for no change."""
    if not delta:
        return "0"
    pct = f", {delta / base:+.2%}" if base else ""
    return f"{delta:+,} ({si(delta, signed=True)}{pct})"


def _val(v: Any) -> str:
    if isinstance(v, list) and all(isinstance(x, int) for x in v):
        return "x".join(map(str, v)) if v else "()"
    return "none" if v is None else str(v)


def _print(d: dict[str, Any], label_a: str, label_b: str) -> None:
    click.echo(f"A: {label_a}")
    click.echo(f"B: {label_b}")
    head = ["stage", "output A", "output B", "params A", "params B", "Δparams", "MACs A", "MACs B", "ΔMACs"]
    rows = [head]
    for s in d["stages"]:
        a, b = s["a"] or {}, s["b"] or {}
        rows.append(
            [
                ("* " if s["changed"] else "  ") + (f"{s['name_a']} -> " if "name_a" in s else "") + s["name"],
                _shape(a.get("output_shape")),
                _shape(b.get("output_shape")),
                f"{a['params']:,}" if a else "-",
                f"{b['params']:,}" if b else "-",
                _signed(s["delta_params"]),
                f"{a['macs']:,}" if a else "-",
                f"{b['macs']:,}" if b else "-",
                _signed(s["delta_macs"]),
            ]
        )
    t = d["totals"]
    rows.append(
        [
            "  total",
            _shape(t["a"]["output_shape"]),
            _shape(t["b"]["output_shape"]),
            f"{t['a']['params']:,}",
            f"{t['b']['params']:,}",
            _signed(t["delta_params"]),
            f"{t['a']['macs']:,}",
            f"{t['b']['macs']:,}",
            _signed(t["delta_macs"]),
        ]
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for k, r in enumerate(rows):
        if k == len(rows) - 1:
            click.echo("  ".join("-" * w for w in widths))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        click.echo("  ".join(cells).rstrip())
    click.echo(
        f"params {_delta(t['delta_params'], t['a']['params'])}, "
        f"MACs {_delta(t['delta_macs'], t['a']['macs'])}; "
        f"layers {t['a']['layers']} -> {t['b']['layers']}"
    )
    for key, title in (("only_in_a", "only in A"), ("only_in_b", "only in B")):
        layers = d[key]
        if not layers:
            continue
        click.echo(f"\nlayers {title} ({len(layers)}):")
        for n in layers[:LIST_LIMIT]:
            params = f", {n['params']:,} params" if n["params"] else ""
            click.echo(f"  {n['name']}  {n['op']} -> {_shape(n['shape'])}{params}  ({n['loc']})")
        if len(layers) > LIST_LIMIT:
            click.echo(f"  ... and {len(layers) - LIST_LIMIT} more (--json lists all)")
    changed = d["changed"]
    if changed:
        click.echo(f"\nchanged layers ({len(changed)}):")
        for c in changed[:LIST_LIMIT]:
            parts = []
            for k, (a, b) in c["changes"].items():
                if k == "inputs":
                    parts.append(f"inputs ({', '.join(a)}) -> ({', '.join(b)})")
                else:
                    parts.append(f"{k} {_val(a)} -> {_val(b)}")
            name = f"{c['name_a']} -> {c['name']}" if "name_a" in c else c["name"]
            click.echo(f"  {name} ({c['op']}): {', '.join(parts)}")
        if len(changed) > LIST_LIMIT:
            click.echo(f"  ... and {len(changed) - LIST_LIMIT} more (--json lists all)")
    if not (d["only_in_a"] or d["only_in_b"] or changed or any(s["changed"] for s in d["stages"])):
        click.echo("\nno differences")


def _label(spec: Path, overrides: dict[str, str], name: str) -> str:
    sets = ", ".join(f"{k}={v}" for k, v in overrides.items())
    return f"{name} ({os.fspath(spec)}{'; ' + sets if sets else ''})"


@click.command()
@click.argument("spec_a", metavar="A", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("spec_b", metavar="[B]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@sets_option("Set a net parameter on both sides.")
@sets_option("Set a net parameter on side A only.", "--set-a", "sets_a")
@sets_option("Set a net parameter on side B only.", "--set-b", "sets_b")
@mode_option("spec", "Compare the layers as written (spec) or after the train / eval pass pipeline.", extra=["spec"])
@json_option("Print one JSON object instead of the tables.")
def diff(
    spec_a: Path,
    spec_b: Path | None,
    sets: tuple[str, ...],
    sets_a: tuple[str, ...],
    sets_b: tuple[str, ...],
    mode: str,
    as_json: bool,
) -> None:
    """Show what changes from spec A to spec B: per-stage shapes, params and MACs, and layers.

    With one spec, compare it under two sets of overrides (--set-a / --set-b). Stages that
    differ are marked with '*'; deltas are B - A.

    \b
    Examples:
      archc diff specs/resnet18.arch specs/resnet34.arch
      archc diff specs/resnet34.arch --set-a shortcut=A --set-b shortcut=B
      archc diff specs/resnet34.arch specs/plain34.arch --json
      archc diff specs/resnet50.arch --set-a stride_in_1x1=true --set-b stride_in_1x1=false
    """
    if spec_b is None and not (sets_a or sets_b):
        raise click.UsageError("give a second spec B, or compare A with itself under --set-a/--set-b overrides")
    common = parse_sets(sets)
    over_a = {**common, **parse_sets(sets_a)}
    over_b = {**common, **parse_sets(sets_b)}
    path_b = spec_b or spec_a
    try:
        ga = _elaborate(spec_a, over_a, mode)
        gb = _elaborate(path_b, over_b, mode)
    except ArchcError as err:
        fail(err)
        return
    d = compare(ga, gb)
    label_a, label_b = _label(spec_a, over_a, ga.name), _label(path_b, over_b, gb.name)
    if as_json:
        d = {
            "a": {"spec": os.fspath(spec_a), "net": ga.name, "overrides": over_a},
            "b": {"spec": os.fspath(path_b), "net": gb.name, "overrides": over_b},
            "mode": mode,
            **d,
        }
        click.echo(json.dumps(d, indent=1))
    else:
        _print(d, label_a, label_b)
