"""`archc detect`: run a trained detector spec on images and draw what it finds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from archc.commands.options import fail, json_option, parse_sets, sets_option, threads_option
from archc.errors import ArchcError
from archc.files import make_dir, write_output


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--weights", required=True, type=click.Path(dir_okay=False, path_type=Path), help="A trained detector.")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Output image (one input) or directory (several).")
@click.option("--score", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Draw detections above.")
@click.option("--scales", default=None, metavar="S1,S2,...", help="Multi-scale testing: shorter sides to run at.")
@sets_option()
@threads_option
@json_option("Print the detections as JSON.")
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
    from archc.threads import torch_threads

    try:
        with torch_threads(threads):
            results = _detect(spec, images, weights, out, score, scales, parse_sets(sets))
    except ArchcError as err:
        fail(err)
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

    from archc.data.folder import open_rgb
    from archc.detect.draw import DRAW_MIN_SIZE, draw_detections
    from archc.detect.task import load_detector

    try:
        sizes = tuple(int(s) for s in scales.split(",")) if scales else ()
    except ValueError:
        raise ArchcError(f"--scales needs numbers like 96,128, got {scales!r}") from None
    from archc.detect.task import _param

    graph, model = load_detector(str(spec), weights, overrides)
    mean, names = _inference_meta(weights, int(_param(graph, "num_classes") or 0))
    formats = [_image_format(out / p.name if len(images) > 1 else out) for p in images] if out is not None else []
    results = []
    if out is not None and len(images) > 1:
        make_dir(out)
    for k, path in enumerate(images):
        pic = open_rgb(path, hint="give a PNG, JPEG or other image PIL reads")
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
            write_output(target, lambda t, im=drawn, fmt=formats[k]: im.save(t, format=fmt), "image")
            r["drawn"] = str(target)
        results.append(r)
    return results


def _image_format(target: Path) -> str:
    """PIL's format name for an output file's suffix (checked before any work is done)."""
    from PIL import Image

    fmt = Image.registered_extensions().get(target.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ArchcError(
            f"cannot tell the image format of '{target}' (suffix '{target.suffix or 'none'}')",
            hint="name the output NAME.png or NAME.jpg",
        )
    return fmt


def _inference_meta(weights: Path, num_classes: int) -> tuple[Any, list[str]]:
    """The input mean and class names the run trained with, kept in its checkpoint's header.

    Raises:
        WeightsError: the header holds them in another form (an edited or foreign checkpoint).
    """
    import math

    import torch

    from archc.detect.task import _archc_meta, bad_header, header_field

    meta = _archc_meta(weights) or {}
    mean = header_field(meta, weights, "data_mean", list, [])
    if mean and (len(mean) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in mean)):
        raise bad_header(weights, "data_mean", mean, "three finite numbers")
    names = header_field(meta, weights, "class_names", list, [])
    if names and (len(names) != num_classes or not all(isinstance(n, str) for n in names)):
        raise bad_header(weights, "class_names", names, f"{num_classes} class names")
    mean_t = torch.tensor(mean, dtype=torch.float32) if mean else torch.zeros(3)
    return mean_t, names or [str(i) for i in range(1, num_classes + 1)]
