"""`archc detect`: run a trained detector spec on images and draw what it finds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from archc.commands.options import threads_option
from archc.errors import ArchcError, DataError


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--weights", required=True, type=click.Path(dir_okay=False, path_type=Path), help="A trained detector.")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Output image (one input) or directory (several).")
@click.option("--score", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Draw detections above.")
@click.option("--scales", default=None, metavar="S1,S2,...", help="Multi-scale testing: shorter sides to run at.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a net parameter (repeatable).")
@threads_option
@click.option("--json", "as_json", is_flag=True, help="Print the detections as JSON.")
def detect(
    spec: Path,
    images: tuple[Path, ...],
    weights: Path,
    out: Path | None,
    score: float,
    scales: str | None,
    sets: tuple[str, ...],
    threads: int | None,
    as_json: bool,
) -> None:
    """Detect objects in IMAGES with SPEC and --weights; draw the boxes into -o.

    Images smaller than 512 px on the shorter side are drawn enlarged by a whole factor, so that the labels
    (placed outside the boxes) stay small next to the objects; --json boxes are in the input's pixels.

    \b
    Examples:
      archc detect specs/detection/faster_rcnn_small_c4.arch --weights best.safetensors image.png -o out.png
      archc detect specs/detection/faster_rcnn_small_c4.arch --weights w.safetensors a.png b.png -o drawn/
      archc detect specs/detection/faster_rcnn_small_c4.arch --weights w.safetensors a.png --scales 96,128,160 --json
    """
    from archc.cli import _fail, _parse_sets
    from archc.threads import torch_threads

    try:
        with torch_threads(threads):
            results = _detect(spec, images, weights, out, score, scales, _parse_sets(sets))
    except ArchcError as err:
        _fail(err)
        return
    if as_json:
        click.echo(json.dumps(results, indent=1))
    else:
        for r in results:
            found = ", ".join(f"{d['class']} {d['score']:.2f}" for d in r["detections"]) or "nothing"
            click.echo(f"{r['image']}: {found}" + (f" -> {r['drawn']}" if r.get("drawn") else ""))


def _detect(spec, images, weights, out, score, scales, overrides):  # noqa: ANN001, ANN202
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from archc.detect.draw import DRAW_MIN_SIZE, draw_detections
    from archc.detect.task import load_detector

    try:
        sizes = tuple(int(s) for s in scales.split(",")) if scales else ()
    except ValueError:
        raise ArchcError(f"--scales needs numbers like 96,128, got {scales!r}") from None
    from archc.detect.task import _archc_meta, _param

    graph, model = load_detector(str(spec), weights, overrides)
    # the input mean and class names the run trained with are kept in its checkpoint's header
    meta = _archc_meta(weights) or {}
    mean = torch.tensor(meta["data_mean"], dtype=torch.float32) if meta.get("data_mean") else torch.zeros(3)
    names = list(meta.get("class_names") or [])
    names = names or [str(i) for i in range(1, int(_param(graph, "num_classes") or 0) + 1)]
    results = []
    if out is not None and len(images) > 1:
        out.mkdir(parents=True, exist_ok=True)
    for path in images:
        try:
            with Image.open(path) as f:
                pic = f.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        x = torch.from_numpy(np.asarray(pic, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
        with torch.no_grad():
            d = model.detect([x - mean[:, None, None]], scales=sizes)[0]
        keep = d["scores"] >= score
        dets = [
            {"class": names[int(c) - 1], "score": round(float(s), 4), "box": [round(v, 1) for v in b]}
            for b, s, c in zip(
                d["boxes"][keep].tolist(), d["scores"][keep].tolist(), d["labels"][keep].tolist(), strict=True
            )
        ]
        r = {"image": str(path), "detections": dets}
        if out is not None:
            target = out / path.name if len(images) > 1 else out
            drawn = draw_detections(
                pic, d["boxes"], d["labels"], d["scores"], names, score_threshold=score, min_size=DRAW_MIN_SIZE
            )
            drawn.save(target)
            r["drawn"] = str(target)
        results.append(r)
    return results
