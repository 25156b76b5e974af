"""`archc inspect`: where each state_dict key of a compiled module comes from, and its torchvision name.

For every key of the compiled module: the layer (IR node) that owns it, the spec line that
made that layer (node.loc), and the checkpoint keys it is read from. In train mode a key is
read from itself; in eval mode a conv's weight and bias also take in the BN folded into it
(fused_conv's `folded_bn`), so those BN keys are listed with the conv.

The shipped ResNet specs name their layers as torchvision does, so `--keymap torchvision`
maps every key to itself; when the net has the layout of a torchvision ResNet (18, 34, 50,
101, 152), its key set and shapes are compared with that model's, built here from
torchvision's layer rules (torchvision itself is not needed).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import click

from archc.commands.options import fail, json_option, mode_option, parse_sets, sets_option
from archc.errors import ArchcError, WeightsError

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# torchvision.models.resnet: blocks per stage and block kind of each depth
TORCHVISION_RESNETS = {
    ((2, 2, 2, 2), "basic"): "resnet18",
    ((3, 4, 6, 3), "basic"): "resnet34",
    ((3, 4, 6, 3), "bottleneck"): "resnet50",
    ((3, 4, 23, 3), "bottleneck"): "resnet101",
    ((3, 8, 36, 3), "bottleneck"): "resnet152",
}


def torchvision_resnet_keys(blocks: tuple[int, ...], kind: str, num_classes: int = 1000) -> dict[str, tuple]:
    """The state_dict keys and shapes of torchvision's `ResNet(block, blocks)`, from its rules.

    conv1 7x7/2 to 64, bn1; stage i has planes 64 * 2**i and strides 2 from the second
    stage on; a block gets `downsample` (1x1 conv + BN) when it strides or changes the
    channel count; fc maps 512 * expansion features to num_classes.
    """
    expansion = 4 if kind == "bottleneck" else 1
    keys: dict[str, tuple] = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        keys[f"{name}.weight"] = (cout, cin, k, k)

    def bn(name: str, c: int) -> None:
        for k in BN_KEYS:
            keys[f"{name}.{k}"] = () if k == "num_batches_tracked" else (c,)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for i, n in enumerate(blocks):
        planes = 64 * 2**i
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            stride = 2 if i > 0 and j == 0 else 1
            if kind == "bottleneck":
                conv(f"{p}.conv1", planes, inplanes, 1)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * expansion, planes, 1)
                bn(f"{p}.bn3", planes * expansion)
            else:
                conv(f"{p}.conv1", planes, inplanes, 3)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
            if stride != 1 or inplanes != planes * expansion:
                conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    keys["fc.weight"] = (num_classes, 512 * expansion)
    keys["fc.bias"] = (num_classes,)
    return keys


def match_torchvision(graph: Any) -> str | None:
    """The torchvision ResNet whose layout (blocks per stage, block kind) the graph has, or None."""
    names = {n.name for n in graph.nodes()}
    if not {"conv1", "fc"} <= names:
        return None
    blocks = []
    for i in range(1, 5):
        count = 0
        while any(n.startswith(f"layer{i}.{count}.") for n in names):
            count += 1
        blocks.append(count)
    if any(n.startswith("layer5.") for n in names):
        return None
    kind = "bottleneck" if "layer1.0.conv3" in names else "basic"
    return TORCHVISION_RESNETS.get((tuple(blocks), kind))


def _shape(t: Any) -> list[int]:
    return [int(d) for d in t.shape]


def _fmt(shape: list[int] | tuple[int, ...] | None) -> str:
    if shape is None:
        return "-"
    return "x".join(map(str, shape)) if shape else "scalar"


def lower(b: Any, meta: bool) -> Any:
    """Lower a Build's graph with its backend; on the meta device only shapes exist (fast, no memory)."""
    import torch

    from archc.backend import get_backend

    with torch.device("meta") if meta else contextlib.nullcontext():
        return get_backend(b.backend).lower(b.graph, origin=os.path.basename(b.origin))


def keymap(spec: Path, mode: str, overrides: dict[str, str]) -> dict[str, Any]:
    """Rows for every key of the compiled module, plus the checkpoint key space and torchvision comparison."""
    from archc.api import build

    target = build(spec, mode=mode, overrides=overrides, lower=False)
    ckpt = target if mode == "train" else build(spec, mode="train", overrides=overrides, lower=False)
    # every layer as the spec wrote it, for the locations of BNs that eval mode folded away
    spec_nodes = {n.name: n for n in build(spec, overrides=overrides, passes=[], lower=False).graph.nodes()}
    g = target.graph
    state = lower(target, meta=True).state_dict()
    ckpt_state = state if ckpt is target else lower(ckpt, meta=True).state_dict()
    ckpt_shapes = {k: _shape(v) for k, v in ckpt_state.items()}
    rows = []
    folded = []
    for key, value in state.items():
        layer, _, leaf = key.rpartition(".")
        node = g.node(layer) if layer in g else None
        row: dict[str, Any] = {
            "key": key,
            "shape": _shape(value),
            "layer": layer,
            "op": node.op if node else None,
            "loc": node.loc if node else None,
            "from": [key] if key in ckpt_shapes else [],
            "folded_bn": None,
            "folded_bn_loc": None,
        }
        bn = node.attrs.get("folded_bn") if node is not None and node.op == "fused_conv" else None
        if bn:
            row["folded_bn"] = bn
            row["folded_bn_loc"] = spec_nodes[bn].loc if bn in spec_nodes else None
            conv_bias = [key] if node.attrs.get("conv_bias") else []
            if leaf == "weight":  # W' = W * gamma / sqrt(var + eps)
                row["from"] = [key, f"{bn}.weight", f"{bn}.running_var"]
            else:  # b' = (b - mean) * gamma / sqrt(var + eps) + beta
                row["from"] = [*conv_bias, f"{bn}.bias", f"{bn}.running_mean", f"{bn}.weight", f"{bn}.running_var"]
                folded.append({"conv": layer, "bn": bn, "bn_loc": row["folded_bn_loc"]})
        rows.append(row)
    used = {k for r in rows for k in r["from"]}
    dropped = sorted(k for k in ckpt_shapes if k not in used)  # e.g. num_batches_tracked of folded BNs
    return {
        "net": g.name,
        "spec": target.origin,
        "mode": mode,
        "rows": rows,
        "folded": folded,
        "checkpoint_keys": ckpt_shapes,
        "dropped": dropped,
        "ckpt_graph": ckpt.graph,
        "target": target,
    }


def compare_torchvision(info: dict[str, Any]) -> dict[str, Any]:
    """The torchvision key of each checkpoint key (the same name), and the differences to torchvision's ResNet."""
    model = match_torchvision(info["ckpt_graph"])
    ckpt = info["checkpoint_keys"]
    out: dict[str, Any] = {"model": model, "only_archc": [], "only_torchvision": [], "shapes": []}
    if model is None:
        return out
    blocks, kind = next(k for k, v in TORCHVISION_RESNETS.items() if v == model)
    tv = torchvision_resnet_keys(blocks, kind)
    out["only_archc"] = sorted(k for k in ckpt if k not in tv)
    out["only_torchvision"] = sorted(k for k in tv if k not in ckpt)
    out["shapes"] = [
        {"key": k, "archc": ckpt[k], "torchvision": list(tv[k])} for k in ckpt if k in tv and tuple(ckpt[k]) != tv[k]
    ]
    out["n_torchvision"] = len(tv)
    return out


def check_weights(info: dict[str, Any], path: Path) -> dict[str, Any]:
    """Compare a checkpoint with the key space the module loads from; load it when it fits."""
    from archc.api import load_weights, read_checkpoint

    state = read_checkpoint(path)
    want = info["checkpoint_keys"]
    missing = sorted(k for k in want if k not in state)
    unexpected = sorted(k for k in state if k not in want)
    mismatched = [
        {"key": k, "file": _shape(v), "net": want[k]}
        for k, v in sorted(state.items())
        if k in want and hasattr(v, "shape") and _shape(v) != want[k]
    ]
    report = {
        "file": str(path),
        "keys": len(state),
        "missing": missing,
        "unexpected": unexpected,
        "mismatched": mismatched,
        "ok": not (missing or unexpected or mismatched),
    }
    if report["ok"]:
        target = info["target"]
        load_weights(lower(target, meta=False), state, target.graph)  # the real load (folds BN in eval mode)
    return report


def weights_error(report: dict[str, Any], net: str) -> WeightsError:
    parts = []
    notes = []
    if report["missing"]:
        parts.append(f"{len(report['missing'])} missing key(s)")
        notes.append("missing (the network needs them, the file lacks them): " + ", ".join(report["missing"]))
    if report["unexpected"]:
        parts.append(f"{len(report['unexpected'])} unexpected key(s)")
        notes.append("unexpected (in the file, not in the network): " + ", ".join(report["unexpected"]))
    if report["mismatched"]:
        parts.append(f"{len(report['mismatched'])} key(s) with the wrong shape")
        for m in report["mismatched"]:
            notes.append(f"shape: '{m['key']}' is {_fmt(m['file'])} in the file, the network needs {_fmt(m['net'])}")
    return WeightsError(
        f"weights {report['file']} do not match {net}: {', '.join(parts)}",
        notes=notes,
        hint="check --set values (shortcut, num_classes, input_size) against the checkpoint's model",
    )


def _compact(keys: list[str]) -> str:
    """`a.w, bn.x, bn.y` -> `a.w, bn.{x,y}`: keys of one layer grouped."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        layer, _, leaf = k.rpartition(".")
        groups.setdefault(layer, []).append(leaf)
    return ", ".join(f"{p}.{v[0]}" if len(v) == 1 else f"{p}.{{{','.join(v)}}}" for p, v in groups.items())


def _tv_cell(row: dict[str, Any], tv: dict[str, Any] | None) -> str:
    if tv is None:
        return ""
    if not row["from"]:
        return "(none)"
    only = set(tv["only_archc"])
    if row["folded_bn"] is None and row["from"] == [row["key"]]:
        return "(not in torchvision)" if row["key"] in only else "same"
    text = _compact(row["from"])
    missing = [k for k in row["from"] if k in only]
    return text + (f"  (not in torchvision: {_compact(missing)})" if missing else "")


def _print(info: dict[str, Any], tv: dict[str, Any] | None, report: dict[str, Any] | None) -> None:
    rows = info["rows"]
    eval_mode = info["mode"] == "eval"
    head = ["key", "shape", "layer (op)", "defined at"]
    if eval_mode:
        head.append("folds (defined at)")
    if tv is not None:
        head.append("torchvision key" + ("s" if eval_mode else ""))
    table = [head]
    for r in rows:
        cells = [r["key"], _fmt(r["shape"]), f"{r['layer']} ({r['op']})", r["loc"] or "-"]
        if eval_mode:
            cells.append(f"{r['folded_bn']} ({r['folded_bn_loc']})" if r["folded_bn"] else "")
        if tv is not None:
            cells.append(_tv_cell(r, tv))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    click.echo(f"{info['net']} ({info['spec']}, mode {info['mode']})")
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    n_ckpt = len(info["checkpoint_keys"])
    line = f"{len(rows)} keys"
    if eval_mode:
        line += f", read from {n_ckpt} checkpoint keys: {len(info['folded'])} BNs folded into their convs"
        if info["dropped"]:
            line += f"; {len(info['dropped'])} checkpoint keys unused ({_compact(info['dropped'][:4])}"
            line += " ...)" if len(info["dropped"]) > 4 else ")"
    click.echo(line)
    if tv is not None:
        click.echo(_tv_summary(tv, n_ckpt))
    if report is not None and report["ok"]:
        click.echo(f"weights {report['file']}: all {report['keys']} keys match")


def _tv_summary(tv: dict[str, Any], n_ckpt: int) -> str:
    if tv["model"] is None:
        return (
            "torchvision: keys map to themselves (the specs use torchvision's layer names); "
            "no torchvision ResNet has this layout to compare with"
        )
    diffs = len(tv["only_archc"]) + len(tv["only_torchvision"]) + len(tv["shapes"])
    if not diffs:
        return f"torchvision {tv['model']}: same: all {n_ckpt} checkpoint keys have the same name and shape"
    lines = [f"torchvision {tv['model']}: {diffs} difference(s); keys in both have the same name:"]
    if tv["only_archc"]:
        lines.append(f"  only in archc ({len(tv['only_archc'])}): {_compact(tv['only_archc'])}")
    if tv["only_torchvision"]:
        lines.append(f"  only in torchvision ({len(tv['only_torchvision'])}): {_compact(tv['only_torchvision'])}")
    for s in tv["shapes"]:
        lines.append(f"  shape: {s['key']} is {_fmt(s['archc'])} here, {_fmt(s['torchvision'])} in torchvision")
    return "\n".join(lines)


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--keymap",
    "keymap_name",
    type=click.Choice(["torchvision", "none"]),
    default="torchvision",
    show_default=True,
    help="Key naming to map to and compare with.",
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Check a checkpoint (.safetensors or torch file) against the keys; exit 2 when it does not fit.",
)
@mode_option("train", "Pass pipeline: eval shows which BN keys fold into which conv.")
@sets_option()
@json_option()
def inspect(
    spec: Path, keymap_name: str, weights: Path | None, mode: str, sets: tuple[str, ...], as_json: bool
) -> None:
    """Map each state_dict key of the compiled SPEC to its layer, spec line and torchvision key.

    Checkpoints are always in the train-mode key space (the spec's names); in eval mode
    the table shows which BN keys fold into which conv. With --weights, missing and
    unexpected keys and shape mismatches are listed by name (exit status 2).

    \b
    Examples:
      archc inspect specs/resnet18.arch --keymap torchvision
      archc inspect specs/resnet50.arch --mode eval
      archc inspect specs/resnet34.arch --set shortcut=A --json
      archc inspect specs/resnet18.arch --weights resnet18.safetensors
    """

    report = None
    try:
        info = keymap(spec, mode, parse_sets(sets))
        tv = compare_torchvision(info) if keymap_name == "torchvision" else None
        if weights is not None:
            report = check_weights(info, weights)
    except ArchcError as err:
        fail(err)
        return
    if as_json:
        click.echo(json.dumps(_json(info, tv, report), indent=1))
    else:
        _print(info, tv, report)
    if report is not None and not report["ok"]:
        fail(weights_error(report, info["net"]))


def _json(info: dict[str, Any], tv: dict[str, Any] | None, report: dict[str, Any] | None) -> dict[str, Any]:
    keys = []
    for r in info["rows"]:
        entry = {k: r[k] for k in ("key", "shape", "layer", "op", "loc", "from", "folded_bn", "folded_bn_loc")}
        if tv is not None:
            entry["torchvision"] = [k for k in r["from"] if k not in set(tv["only_archc"])]
            entry["same"] = _tv_cell(r, tv) == "same"
        keys.append(entry)
    out: dict[str, Any] = {
        "net": info["net"],
        "spec": os.fspath(info["spec"]),
        "mode": info["mode"],
        "keys": keys,
        "checkpoint_keys": {k: v for k, v in info["checkpoint_keys"].items()},
        "folded": info["folded"],
        "dropped": info["dropped"],
    }
    if tv is not None:
        out["torchvision"] = {k: v for k, v in tv.items()}
    if report is not None:
        out["weights"] = report
    return out
