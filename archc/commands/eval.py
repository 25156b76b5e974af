"""`archc eval`: the test error (classifiers) or COCO metrics (detectors) of a spec with trained weights."""

from __future__ import annotations

import json
import time
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


@click.command(name="eval")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--weights",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="best.safetensors / last.safetensors of a run, or any checkpoint in the spec's key space.",
)
@click.option("--data", default=None, metavar="KIND[:PATH]", help="As for archc train (default: the embedded set).")
@click.option("--recipe", default=None, metavar="NAME|FILE", help="Its test-time settings (crop, mean).")
@click.option("--test-crop", type=click.Choice(["center", "ten"]), default=None, help="center or 10-crop testing.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per forward pass.")
@sets_option()
@backend_option("Backend plugin that lowers the net.")
@mode_option("eval", "Pass pipeline: eval folds BN and fuses (faster); train keeps every layer.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None, help="Mixed precision.")
@click.option("--seed", type=int, default=0, show_default=True, help="Only for data sets generated from a seed.")
@threads_option
@json_option("Print the metrics as JSON.")
def eval_(
    spec: Path,
    weights: Path,
    data: str | None,
    recipe: str | None,
    test_crop: str | None,
    batch_size: int | None,
    sets: tuple[str, ...],
    backend: str,
    mode: str,
    device: str | None,
    amp: str | None,
    seed: int,
    threads: int | None,
    as_json: bool,
) -> None:
    """Evaluate SPEC with --weights on a test set: top-1/top-5 error, or COCO AP for detector specs.

    \b
    Examples:
      archc eval specs/cifar/resnet20.arch --weights runs/resnet20-0001/best.safetensors
      archc eval specs/cifar/resnet110.arch --weights w.safetensors --data cifar10:/data/cifar-10-batches-py
      archc eval specs/resnet50.arch --weights r50.safetensors --data imagefolder:/data/imagenet --test-crop ten
      archc eval specs/detection/faster_rcnn_small_c4.arch --weights best.safetensors --data shapes
    """
    try:
        opts = dict(locals())
        opts["overrides"] = parse_sets(sets)
        from archc.commands.train import spec_graph
        from archc.threads import torch_threads

        table = None
        opts["graph"] = spec_graph(spec, opts["overrides"])
        with torch_threads(threads):
            if "cut" in opts["graph"].meta:
                from archc.detect.task import evaluate_detector

                metrics, table = evaluate_detector(spec, weights, data, opts["overrides"], backend, device, seed)
            else:
                metrics = _eval_classifier(opts)
    except ArchcError as err:
        fail(err)
        return
    if as_json:
        click.echo(json.dumps(metrics, indent=2, sort_keys=True))
        return
    from archc.console import make_console

    console = make_console()
    if table is not None:
        console.print(table)
        return
    from rich.table import Table

    t = Table(title=f"{metrics['net']} on {metrics['data']} ({metrics['images']} images)", title_justify="left")
    for col in ("top-1 error", "top-5 error", "loss", "img/s"):
        t.add_column(col, justify="right")
    t.add_row(
        f"{100 * metrics['error']:.2f}%",
        f"{100 * metrics['top5_error']:.2f}%",
        f"{metrics['loss']:.4f}",
        f"{metrics['img_s']:.0f}",
    )
    console.print(t)


def _eval_classifier(o: dict[str, Any]) -> dict[str, Any]:
    """Test metrics for the parsed `archc eval` options `o` (the click parameters by name)."""
    import archc
    from archc.commands.train import resolve_recipe
    from archc.train.classify import ClassifyTask
    from archc.train.distributed import init_distributed
    from archc.train.loop import _autocast

    spec, overrides, data = o["spec"], o["overrides"], o["data"]
    hps = {"test_crop": o["test_crop"]} if o["test_crop"] else {}
    r = resolve_recipe(o["recipe"], o["graph"].input.shape, data, None, o["batch_size"], None, hps)
    info = init_distributed(o["device"])
    b = archc.build(spec, backend=o["backend"], mode=o["mode"], overrides=overrides)
    archc.load_weights(b.module, o["weights"], b.graph)
    model = b.module.to(info.device).eval()
    task = ClassifyTask(b.graph, data, r, o["seed"], info)
    t0 = time.perf_counter()
    metrics = task.evaluate(model, info.device, _autocast(o["amp"], info.device))
    seconds = time.perf_counter() - t0
    return {
        **metrics,
        "net": b.graph.name,
        "data": task.data.name,
        "weights": str(o["weights"]),
        "test_crop": r.test_crop,
        "img_s": metrics["images"] / max(seconds, 1e-9),
    }
