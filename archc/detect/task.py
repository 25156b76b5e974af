"""The detection task for `archc train` / `archc eval` / `archc detect`: a Faster R-CNN C4 built from a spec.

The spec's `cut` splits the net: the trunk (conv1..conv4_x) runs on the image, the head (conv5_x + global
pooling) runs per RoI. Detector settings come from the spec's net parameters (`anchor_sizes`,
`roi_size`, `num_classes`, ...) and `--hp`; BN is frozen and the stem plus the first `freeze_at` stages
keep their weights, as in the paper's fine-tuning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from archc.errors import DataError, TrainError, WeightsError
from archc.ir import Graph
from archc.train.distributed import DistInfo
from archc.train.recipes import Recipe, load_recipe, override

# Appendix A (MS COCO): "mini-batch size of 8 images ... 240k iterations with a learning rate of 0.001 and then
# for 80k iterations with 0.0001". `shapes` is the CPU demo's recipe: few small images, a higher rate.
COCO = Recipe(
    name="coco",
    lr=0.001,
    batch_size=8,
    iters=320_000,
    milestones=(240_000,),
    eval_every=20_000,
    log_every=20,
    flip=True,
    mean="pixel",
    warmup_lr=None,
)
SHAPES = Recipe(
    name="shapes",
    lr=0.02,
    batch_size=4,
    iters=1500,
    milestones=(1000, 1300),
    eval_every=250,
    log_every=25,
    flip=True,
    mean="pixel",
    warmup_lr=None,
)
DETECTION_PRESETS = {"coco": COCO, "shapes": SHAPES}


def detection_recipe(
    recipe: str | None, iters: int | None, batch_size: int | None, lr: float | None, hps: dict[str, str]
) -> Recipe:
    """The recipe for a detector: `coco` (the paper's), `shapes` (CPU demo, the default) or a file.

    Raises:
        TrainError: an unknown recipe or a bad override.
    """
    if recipe is None or recipe in DETECTION_PRESETS:
        r = DETECTION_PRESETS[recipe or "shapes"]
    else:
        r = load_recipe(recipe)
    names = {f.name for f in dataclasses.fields(Recipe)}
    changes: dict[str, Any] = {k: v for k, v in hps.items() if k in names}
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if lr is not None:
        changes["lr"] = lr
    scale_to = int(changes.pop("iters")) if "iters" in changes else iters
    if scale_to:
        r = r.scaled(scale_to)
    if changes:
        r = override(r, changes)
    # the rest are detector settings (DetectorConfig fields, freeze_at), kept with the recipe for --resume
    r = dataclasses.replace(r, extra={k: v for k, v in hps.items() if k not in names})
    return r


def _param(graph: Graph, key: str) -> str | None:
    v = graph.meta.get("params", {}).get(key)
    return None if v is None else str(v)


def detector_config(graph: Graph, hps: dict[str, str]) -> Any:
    """DetectorConfig from the spec's net parameters, then `--hp` detector fields."""
    from archc.detect.config import DetectorConfig

    cfg = DetectorConfig()
    fields = {f.name for f in dataclasses.fields(DetectorConfig)}
    values: dict[str, str] = {}
    for key in fields:
        v = _param(graph, key)
        if v is not None:
            values[key] = v
    values.update({k: v for k, v in hps.items() if k in fields})
    unknown = sorted(set(hps) - fields - {f.name for f in dataclasses.fields(Recipe)} - {"freeze_at"})
    if unknown:
        raise TrainError(
            f"unknown setting(s) {', '.join(unknown)}",
            hint=f"recipe fields or detector fields: {', '.join(sorted(fields))}",
        )
    return cfg.replace(**values) if values else cfg


def build_detector(cfg: Any) -> tuple[Graph, Any]:
    """Compile a detector spec into a FasterRCNN: trunk and per-RoI head from the spec's `cut`.

    BN is frozen everywhere and the stem plus the first `freeze_at` stages (default 1: conv1 and conv2_x,
    as in Faster R-CNN's ResNet fine-tuning) keep their weights.

    Args:
        cfg: a TrainConfig (spec, overrides, backend; recipe.extra holds detector `--hp` fields).

    Returns:
        (the whole net's graph, the FasterRCNN module).

    Raises:
        TrainError: the spec is no detector (no `cut`, no num_classes).
    """
    import archc
    from archc.detect.model import FasterRCNN

    hps = dict(cfg.recipe.extra or {})
    whole = archc.build(cfg.spec, overrides=cfg.overrides, lower=False, passes=[]).graph
    cut = whole.meta.get("cut")
    if not cut:
        raise TrainError(f"{cfg.spec} has no `cut`: it is not a detector spec", hint="see specs/detection/")
    dcfg = detector_config(whole, hps)
    freeze_at = int(hps.get("freeze_at", 1))
    kw: dict[str, Any] = {"backend": cfg.backend, "mode": "train", "overrides": cfg.overrides, "frozen_bn": True}
    trunk = archc.build(cfg.spec, part="trunk", freeze_at=freeze_at, **kw)
    head = archc.build(cfg.spec, part="head", **kw)
    num_classes = int(_param(whole, "num_classes") or 0)
    if num_classes <= 0:
        raise TrainError(f"detector spec {cfg.spec} needs a num_classes net parameter (foreground classes)")
    model = FasterRCNN(
        trunk.module,
        head.module,
        int(trunk.graph.output.shape[0]),
        int(head.graph.output.shape[0]),
        num_classes,
        dcfg,
        tuple(cut["size"]),
    )
    return whole, model


class DetectTask:
    """Faster R-CNN training batches, losses and COCO evaluation.

    Args:
        graph: the whole detector net's graph.
        data: `shapes[:N_TRAIN,N_TEST]` (default) or `coco:...`.
        recipe: batch size, flips.
        seed: data order and flips.
        info: this process's place in the process group.
    """

    select = "AP50"
    higher_is_better = True

    def __init__(self, graph: Graph, data: str | None, recipe: Recipe, seed: int, info: DistInfo) -> None:
        from archc.data.coco import open_detection_data

        self.info = info
        self.recipe = recipe
        self.seed = seed
        self.data = open_detection_data(data or "shapes")
        spec_classes = int(_param(graph, "num_classes") or 0)
        if spec_classes != self.data.num_classes:
            raise DataError(
                f"the data set has {self.data.num_classes} classes, the detector spec {spec_classes}",
                hint=f"--set num_classes={self.data.num_classes}",
            )
        if recipe.batch_size % info.world:
            raise DataError(f"the batch of {recipe.batch_size} does not split over {info.world} processes")
        self.local_batch = recipe.batch_size // info.world
        self.mean = _channel_mean(self.data.train)
        size = _param(graph, "input_size")
        self.min_size = int(size.split("x")[1]) if size else None
        self.max_size = int(size.split("x")[2]) if size else None

    @classmethod
    def build_model(cls, cfg: Any, fresh: bool) -> tuple[Graph, Any]:
        """`build_detector(cfg)`; on a fresh run (no checkpoint resumed) `cfg.init` initialises the backbone."""
        graph, module = build_detector(cfg)
        if cfg.init and fresh:
            init_backbone(module, cfg.init, graph)
        return graph, module

    @classmethod
    def from_config(cls, cfg: Any, graph: Graph, recipe: Recipe, info: DistInfo) -> DetectTask:
        """The task for a TrainConfig `cfg` (its data and seed)."""
        return cls(graph, cfg.data, recipe, cfg.seed, info)

    def checkpoint_meta(self) -> dict[str, Any]:
        """Kept in checkpoints for `archc detect`: the input mean and the class names."""
        return {"data_mean": [round(float(v), 6) for v in self.mean], "class_names": list(self.data.class_names)}

    @property
    def epoch_iters(self) -> int:
        """Iterations per pass over the training images."""
        return max(1, len(self.data.train) // self.recipe.batch_size)

    def _indices(self, it: int) -> list[int]:
        n = len(self.data.train)
        per = self.epoch_iters
        epoch, pos = divmod(it, per)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        batch = perm[pos * self.recipe.batch_size : (pos + 1) * self.recipe.batch_size].tolist()
        return batch[self.info.rank :: self.info.world]

    def batch(self, it: int) -> tuple[Any, Any]:
        """Training batch `it` for this rank: a pure function of (seed, it)."""
        from archc.data.coco import detection_batches

        g = torch.Generator().manual_seed(self.seed * 7919 + it)
        images, sizes, targets, _ = detection_batches(
            self.data.train,
            self._indices(it),
            min_size=self.min_size,
            max_size=self.max_size,
            flip=self.recipe.flip,
            generator=g,
            mean=self.mean,
        )
        # the same generator then draws the RPN's and the head's samples: batch `it` is reproducible
        return images, (sizes, targets, g)

    def batches(self, start: int) -> Iterator[tuple[Any, Any]]:
        """Training batches from iteration `start` on."""
        it = start
        while True:
            yield self.batch(it)
            it += 1

    def step(self, model: Any, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Total detection loss and [loss sum, 0, images] for the window statistics."""
        sizes, targets, g = y
        losses = model(x, image_sizes=sizes, targets=targets, generator=g)
        loss = sum(losses.values())
        n = float(x.shape[0])
        stats = torch.tensor([loss.item() * n, 0.0, n], dtype=torch.float64)
        return loss, stats

    @torch.no_grad()
    def detect_all(self, model: Any, dataset: Any, device: str) -> dict[int, dict[str, torch.Tensor]]:
        """Detections for every image of `dataset` (this rank's share), boxes in original pixels."""
        from archc.data.coco import detection_batches

        was = model.training
        model.eval()
        out: dict[int, dict[str, torch.Tensor]] = {}
        idx = list(range(self.info.rank, len(dataset), self.info.world))
        bs = max(1, self.local_batch)
        for i in range(0, len(idx), bs):
            chunk = idx[i : i + bs]
            images, sizes, targets, scales = detection_batches(
                dataset,
                chunk,
                min_size=self.min_size,
                max_size=self.max_size,
                flip=False,
                generator=torch.Generator().manual_seed(0),
                mean=self.mean,
            )
            dets = model(images.to(device), image_sizes=sizes)
            for t, d, s in zip(targets, dets, scales, strict=True):
                out[int(t["image_id"])] = {k: (v / s if k == "boxes" else v).cpu() for k, v in d.items()}
        model.train(was)
        return out

    def evaluate(self, model: Any, device: str, autocast: Any = None) -> dict[str, float]:
        """COCO mAP@[.5,.95] and mAP@.5 on the test images (rank 0 gathers every rank's detections)."""
        from archc.detect.evaluate import coco_evaluate

        inner = model.module if hasattr(model, "module") else model
        dets = self.detect_all(inner, self.data.test, device)
        if self.info.world > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.info.world
            dist.all_gather_object(gathered, dets)
            dets = {k: v for part in gathered for k, v in part.items()}
        # every rank holds all detections now, so every rank computes the same metrics
        metrics = coco_evaluate(self.data.test, dets)
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _channel_mean(dataset: Any, limit: int = 256) -> torch.Tensor:
    """Per-channel mean in [0,1] of the first `limit` training images (deterministic)."""
    total = torch.zeros(3, dtype=torch.float64)
    count = 0
    for i in range(min(limit, len(dataset))):
        img = dataset[i][0].double() / 255.0
        total += img.sum(dim=(1, 2))
        count += img.shape[1] * img.shape[2]
    if count == 0:
        raise DataError("the detection training set is empty")
    return (total / count).float()


def init_backbone(model: Any, path: str | Path, graph: Graph) -> int:
    """Load a classification checkpoint (archc or torchvision format) into the trunk and head.

    The classifier's `fc.*` is dropped; every other backbone key must be present. The stride convention
    is checked: torchvision's ResNets stride the 3x3 ("v1.5"), the paper strides the first 1x1.

    Returns:
        How many tensors were loaded.

    Raises:
        WeightsError: keys or shapes do not fit, or the stride conventions differ.
    """
    from archc.api import read_checkpoint
    from archc.weights import check_weights, checkpoint_slots

    state = read_checkpoint(path)
    in_1x1 = (_param(graph, "stride_in_1x1") or "true") == "true"
    archc_meta = _archc_meta(path)
    if archc_meta is not None:
        saved = header_field(archc_meta, path, "config.overrides.stride_in_1x1", str)
        src_in_1x1 = None if saved is None else saved == "true"
    else:
        src_in_1x1 = False  # torchvision convention
    if src_in_1x1 is not None and src_in_1x1 != in_1x1:
        where = "the first 1x1 (the paper)" if src_in_1x1 else "the 3x3 (torchvision, 'v1.5')"
        raise WeightsError(
            f"{path} was trained with the stride on {where}; the detector strides the "
            + ("first 1x1" if in_1x1 else "3x3"),
            hint=f"--set stride_in_1x1={'true' if src_in_1x1 else 'false'}",
        )
    loaded = 0
    for part, module in (("trunk", model.trunk), ("head", model.roi_heads.head)):
        own = module.state_dict()
        sub = {k: v for k, v in state.items() if k in own}
        check_weights(sub, checkpoint_slots(own), f"the {part} weights in {path}")
        module.load_state_dict(sub, strict=True)
        loaded += len(sub)
    return loaded


def _archc_meta(path: str | Path) -> dict[str, Any] | None:
    from archc.train.checkpoint import read_meta

    meta = read_meta(Path(path)) if str(path).endswith(".safetensors") else None
    if meta is not None and not isinstance(meta, dict):
        raise WeightsError(f"{path}: the header's run metadata is a {type(meta).__name__}, not an object")
    return meta


def header_field(meta: dict[str, Any], path: str | Path, field: str, kind: type, default: Any = None) -> Any:
    """A field of an `archc train` checkpoint's run metadata, e.g. "config.recipe.extra", checked for its type.

    Args:
        meta: the header's run metadata (from read_meta).
        path: the checkpoint (named in errors).
        field: dotted path of the field.
        kind: the type it must have (list and dict contents are checked by the caller).
        default: returned when the field (or a dict on its way) is absent or null.

    Raises:
        WeightsError: the field or a level above it has another type (an edited or foreign header).
    """
    value: Any = meta
    for part in field.split("."):
        if not isinstance(value, dict):
            raise bad_header(path, field, value, "an object")
        if value.get(part) is None:
            return default
        value = value[part]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise bad_header(path, field, value, _KINDS.get(kind, kind.__name__))
    return value


_KINDS = {dict: "an object", list: "a list", str: "a string"}


def bad_header(path: str | Path, field: str, value: Any, wanted: str) -> WeightsError:
    """The error for a header field of the wrong kind (an edited or foreign checkpoint)."""
    return WeightsError(
        f"{path}: the header field '{field}' is malformed (a {type(value).__name__} where {wanted} belongs)",
        hint="the file was edited or not written by archc train: use the run's checkpoint as written",
    )


def load_detector(
    spec: str, weights: str | Path, overrides: dict[str, str], backend: str = "torch"
) -> tuple[Graph, Any]:
    """A detector compiled from `spec` with the weights of an `archc train` run (or any detector state_dict).

    Raises:
        WeightsError: the weights do not fit the detector.
    """
    from archc.api import read_checkpoint
    from archc.train.config import TrainConfig
    from archc.train.recipes import Recipe
    from archc.weights import check_weights, checkpoint_slots

    hps: dict[str, str] = {}
    meta = _archc_meta(weights)
    if meta is not None:
        # the detector settings the run trained with (e.g. --hp global_context=true) shape the model
        hps = header_field(meta, weights, "config.recipe.extra", dict, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in hps.items()):
            raise bad_header(weights, "config.recipe.extra", hps, "an object of strings (the --hp settings)")
    cfg = TrainConfig(spec=str(spec), recipe=Recipe(extra=hps), overrides=overrides, backend=backend, task="detect")
    graph, model = build_detector(cfg)
    state = read_checkpoint(weights)
    check_weights(state, checkpoint_slots(model.state_dict()), f"weights {weights}")
    model.load_state_dict(state, strict=True)
    return graph, model.eval()


def evaluate_detector(
    spec: str,
    weights: str | Path,
    data: str | None,
    overrides: dict[str, str],
    backend: str,
    device: str | None,
    seed: int,
) -> tuple[dict[str, Any], Any]:
    """COCO metrics of a trained detector on a data set's test images, and their rich table."""
    from archc.detect.evaluate import coco_evaluate, format_table
    from archc.train.distributed import init_distributed
    from archc.train.recipes import Recipe

    info = init_distributed(device)
    graph, model = load_detector(spec, weights, overrides, backend)
    model = model.to(info.device)
    task = DetectTask(graph, data, Recipe(name="eval", batch_size=4), seed, info)
    coco_metrics = coco_evaluate(task.data.test, task.detect_all(model, task.data.test, info.device))
    title = f"{graph.name} on {task.data.name} test ({len(task.data.test)} images): COCO bbox AP (%)"
    return {**coco_metrics, "net": graph.name, "data": task.data.name, "weights": str(weights)}, format_table(
        coco_metrics, title
    )
