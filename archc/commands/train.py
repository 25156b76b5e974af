"""`archc train`: train a spec with the paper's recipes, on one process or many (torchrun)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from archc.commands.options import backend_option, fail, json_option, parse_sets, sets_option, threads_option
from archc.errors import ArchcError

# The embedded digits are small (1,438 training images): this many iterations of the CIFAR recipe (~70
# epochs) reach >= 95% test accuracy on a 2-core CPU in a few minutes; the schedule keeps its shape.
EMBEDDED_ITERS = {None: 800, "digits": 800}


def resolve_recipe(
    recipe: str | None,
    input_shape: tuple[int, ...],
    data: str | None,
    iters: int | None,
    batch_size: int | None,
    lr: float | None,
    hps: dict[str, str],
) -> Any:
    """The recipe a command line asks for: preset or file, scaled to --iters, then --hp, --batch-size, --lr.

    Raises:
        TrainError: an unknown preset/file or a bad override.
    """
    from archc.train.recipes import default_recipe, load_recipe, override

    r = load_recipe(recipe) if recipe else default_recipe(input_shape)
    changes: dict[str, Any] = dict(hps)
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if lr is not None:
        changes["lr"] = lr
    scale_to = iters
    if "iters" in changes:
        # --hp iters=N is the same as --iters N: it scales the schedule
        scale_to = int(changes.pop("iters"))
    if scale_to is None and data in EMBEDDED_ITERS:
        scale_to = EMBEDDED_ITERS[data]
    if scale_to is not None:
        r = r.scaled(scale_to)
    # explicit values win over scaled ones: they are given for the run as it will be
    return override(r, changes) if changes else r


def spec_graph(spec: Path, overrides: dict[str, str]) -> Any:
    """The spec's graph before any pass (for its input shape and whether it is a detector: has a `cut`)."""
    import archc

    return archc.build(spec, overrides=overrides, lower=False, passes=[]).graph


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    default=None,
    metavar="KIND[:PATH]",
    help="digits (embedded, the default), cifar10:DIR, imagefolder:DIR, synthetic[:N]; detector specs: "
    "shapes[:N_TRAIN,N_TEST] (generated, the default) or coco:IMAGES,ANNOTATIONS.json[;IMAGES,ANNOTATIONS.json].",
)
@click.option("--recipe", default=None, metavar="NAME|FILE", help="cifar, imagenet, or a .toml/.json recipe file.")
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Total iterations; the schedule scales.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Global mini-batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Base learning rate.")
@click.option("--hp", "hps", multiple=True, metavar="KEY=VALUE", help="Change any recipe field (repeatable).")
@sets_option()
@backend_option("Backend plugin that lowers the net.")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None, help="Mixed precision.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
@click.option("--sync-bn", is_flag=True, help="Batch statistics over all processes' shards (default: per process).")
@click.option("--deterministic", is_flag=True, help="torch.use_deterministic_algorithms(True).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the weights, data order, augmentation.")
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True)
@click.option("--name", default=None, help="Run name (default: the net's name); the run dir is RUNS/NAME-NNNN.")
@click.option("--resume", type=click.Path(exists=True, path_type=Path), default=None, help="Run dir to continue.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Threads preparing batches ahead (default: 0 for in-memory sets, up to 8 for image folders).",
)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, help="Iterations between checkpoints.")
@click.option(
    "--init",
    default=None,
    metavar="WEIGHTS",
    help="Start from these weights; for a detector spec, a classification checkpoint (archc or torchvision "
    "format) initialises the backbone.",
)
@click.option("--progress/--no-progress", default=True, help="Progress bar (a line per record when not a TTY).")
@threads_option
@json_option("Print the final result as JSON.")
def train(
    spec: Path,
    data: str | None,
    recipe: str | None,
    iters: int | None,
    batch_size: int | None,
    lr: float | None,
    hps: tuple[str, ...],
    sets: tuple[str, ...],
    backend: str,
    amp: str | None,
    device: str | None,
    sync_bn: bool,
    deterministic: bool,
    seed: int,
    runs: Path,
    name: str | None,
    resume: Path | None,
    workers: int | None,
    checkpoint_every: int | None,
    init: str | None,
    progress: bool,
    threads: int | None,
    as_json: bool,
) -> None:
    """Train SPEC with the paper's recipe; metrics and checkpoints go to RUNS/NAME-NNNN/.

    Without --data a classifier trains on the embedded digits (real 8x8 scans shipped with scikit-learn,
    resized to the net's input) for 800 iterations of the CIFAR recipe. Schedules are in iterations as
    in the paper; --iters rescales them. The run directory holds metrics.jsonl, last.safetensors and
    best.safetensors (weights usable as --weights; optimizer, schedule and RNG state for --resume).
    Several processes: `torchrun --nproc-per-node 8 -m archc train SPEC ...` (--batch-size stays global).

    \b
    Examples:
      archc train specs/cifar/resnet20.arch
      archc train specs/cifar/resnet110.arch --data cifar10:/data/cifar-10-batches-py --recipe cifar
      archc train specs/resnet50.arch --data imagefolder:/data/imagenet --recipe imagenet --amp bf16
      archc train specs/cifar/resnet20.arch --resume runs/resnet20-0001
      archc train specs/cifar/resnet56.arch --iters 6400 --hp warmup_lr=none --batch-size 64
      archc train specs/detection/faster_rcnn_small_c4.arch --data shapes
      archc train specs/detection/faster_rcnn_r50_c4.arch --data coco:imgs,ann.json --init r50.safetensors
    """
    from archc.threads import torch_threads

    opts = dict(locals())
    try:
        opts["hps"] = parse_sets(hps, "--hp", empty_values=True)
        opts["overrides"] = parse_sets(sets)
        # --deterministic: the same thread count whatever the load, so reruns sum floats in the same order
        with torch_threads(threads, load_aware=not deterministic):
            result = _train(opts)
    except ArchcError as err:
        fail(err)
        return
    if result is not None and as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))


def _train(o: dict[str, Any]) -> dict[str, Any] | None:
    """Run `archc train` with the parsed options `o` (the click parameters by name)."""
    from archc.train.config import TrainConfig
    from archc.train.loop import Trainer
    from archc.train.stopping import TrainingStopped

    spec, resume = o["spec"], o["resume"]
    graph = spec_graph(spec, o["overrides"])
    detector = "cut" in graph.meta
    if detector:
        from archc.detect.task import detection_recipe

        r = detection_recipe(o["recipe"], o["iters"], o["batch_size"], o["lr"], o["hps"])
    else:
        r = resolve_recipe(o["recipe"], graph.input.shape, o["data"], o["iters"], o["batch_size"], o["lr"], o["hps"])
    if resume is not None:
        from archc.train.runs import resume_checkpoint

        resume_checkpoint(resume)  # fails before any work when there is nothing to resume
    same = ("data", "backend", "overrides", "runs", "name", "seed", "amp", "device", "sync_bn", "deterministic")
    more = ("workers", "checkpoint_every", "progress", "init")
    task = "detect" if detector else "classify"
    cfg = TrainConfig(spec=str(spec), recipe=r, task=task, **{k: o[k] for k in same + more})
    trainer = Trainer(cfg, resume=resume, log=lambda m: click.echo(m, err=True))
    if trainer.info.device == "cpu":
        import torch

        from archc.threads import describe

        trainer.log(describe(torch.get_num_threads()))
    try:
        res = trainer.run()
    except TrainingStopped as stop:
        # the conventional status of a process ended by that signal (130 for SIGINT, 143 for SIGTERM)
        raise SystemExit(128 + stop.signum) from None
    finally:
        trainer.close()
    if not trainer.info.main:
        return None
    summary = {
        "run_dir": str(res.run_dir) if res.run_dir else None,
        "iterations": res.iterations,
        "seconds": round(res.seconds, 2),
        "final": res.final,
        "best": res.best,
        "recipe": trainer.recipe.to_dict(),
    }
    from archc.train.progress import format_metrics

    shown = format_metrics(res.final or {}, sep=", ")
    click.echo(f"done: {res.iterations} iterations in {res.seconds:.0f} s; test {shown}; run {res.run_dir}", err=True)
    return summary
