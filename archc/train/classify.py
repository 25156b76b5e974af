"""The classification task: data, loss and test error for `archc train` / `archc eval`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archc.errors import DataError
from archc.ir import Graph
from archc.train.distributed import DistInfo, all_reduce_sum
from archc.train.recipes import Recipe


def head_classes(graph: Graph) -> int:
    """The number of classes a classification net predicts (its output's width).

    Raises:
        DataError: the net's output is not a vector of class scores.
    """
    shape = tuple(graph.output.shape)
    if len(shape) != 1:
        raise DataError(
            f"net '{graph.name}' outputs a {'x'.join(map(str, shape))} tensor, not class scores",
            hint="end the net with `flatten` and `linear(num_classes)` to train it as a classifier",
        )
    return int(shape[0])


class ClassifyTask:
    """Cross-entropy training and top-1/top-5 test error on a classification data set.

    Args:
        graph: the net's graph (for its input shape and number of classes).
        data: a data spec (`None`/"digits", "cifar10:PATH", "imagefolder:PATH", "synthetic[:N]").
        recipe: the scaled recipe (batch size, augmentation).
        seed: seeds the data order and augmentation.
        info: this process's place in the process group.
        workers: threads preparing batches ahead; None: none for in-memory sets (their batches take about a
            millisecond, and a thread would compete with the training step for the cores), up to 8 for
            image folders (JPEG decoding).
    """

    select = "error"  # the metric that picks the best checkpoint (lower is better)

    def __init__(
        self, graph: Graph, data: str | None, recipe: Recipe, seed: int, info: DistInfo, workers: int | None = None
    ) -> None:
        from archc.data.classify import Batches, open_classify_data, pixel_mean

        self.info = info
        self.input_shape = tuple(int(s) for s in graph.input.shape)
        self.num_classes = head_classes(graph)
        self.data = open_classify_data(data, input_shape=self.input_shape, num_classes=self.num_classes)
        self.augment = recipe.augment()
        self.mean = pixel_mean(self.data.train, self.input_shape) if recipe.mean == "pixel" else None
        if workers is None:
            from archc.data.classify import TensorImageSet

            workers = 0 if isinstance(self.data.train, TensorImageSet) else min(8, os.cpu_count() or 1)
        if recipe.batch_size % info.world:
            raise DataError(
                f"the batch of {recipe.batch_size} does not split evenly over {info.world} processes",
                hint="choose --batch-size divisible by the number of processes",
            )
        common = {"input_shape": self.input_shape, "augment": self.augment, "mean": self.mean, "seed": seed}
        dist = {"rank": info.rank, "world": info.world}
        self.train_batches = Batches(
            self.data.train, batch_size=recipe.batch_size, train=True, workers=workers, **common, **dist
        )
        # test batches are per process: each takes its share of the test set
        test_batch = max(1, min(recipe.batch_size, 256) // info.world)
        self.test_batches = Batches(self.data.test, batch_size=test_batch, train=False, **common, **dist)

    @classmethod
    def build_model(cls, cfg: Any, fresh: bool) -> tuple[Graph, Any]:
        """Compile `cfg.spec` for training; on a fresh run (no checkpoint resumed) load `cfg.init` into it.

        Args:
            cfg: a TrainConfig (spec, backend, overrides, init).
            fresh: no checkpoint is resumed.

        Returns:
            (the net's graph, its module).
        """
        import archc

        b = archc.build(cfg.spec, backend=cfg.backend, mode="train", overrides=cfg.overrides)
        if cfg.init and fresh:
            archc.load_weights(b.module, cfg.init, b.graph)
        return b.graph, b.module

    @classmethod
    def from_config(cls, cfg: Any, graph: Graph, recipe: Recipe, info: DistInfo) -> ClassifyTask:
        """The task for a TrainConfig `cfg` (its data, seed and workers)."""
        return cls(graph, cfg.data, recipe, cfg.seed, info, workers=cfg.workers)

    @property
    def epoch_iters(self) -> int:
        """Iterations per pass over the training set."""
        return len(self.train_batches)

    def batches(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches from iteration `start` on (this rank's shard of each global batch)."""
        return self.train_batches.prefetch(start)

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of one batch and its statistics [loss sum, wrong, count] (summed over ranks later)."""
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        with torch.no_grad():
            wrong = (logits.argmax(1) != y).sum()
            stats = torch.stack([loss.detach() * y.numel(), wrong.float(), torch.tensor(float(y.numel()))])
        return loss, stats

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: str, autocast: Any = None) -> dict[str, float]:
        """Test-set loss, top-1 and top-5 error over all ranks' shards."""
        was_training = model.training
        model.eval()
        totals = torch.zeros(4, dtype=torch.float64)
        ten = self.augment.test_crop == "ten"
        for x, y in self.test_batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if autocast is not None:
                with autocast():
                    logits = model(x).float()
            else:
                logits = model(x).float()
            if ten:
                # average the softmax over the 10 crops of each image (image-major order)
                probs = logits.softmax(1).view(y.numel(), 10, -1).mean(1)
                loss = F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum")
            else:
                probs = logits
                loss = F.cross_entropy(logits, y, reduction="sum")
            k = min(5, probs.shape[1])
            top = probs.topk(k, dim=1).indices
            hit1 = (top[:, 0] == y).sum()
            hit5 = (top == y[:, None]).any(1).sum()
            totals += torch.stack(
                [
                    loss.double().cpu(),
                    (y.numel() - hit1).double().cpu(),
                    (y.numel() - hit5).double().cpu(),
                    torch.tensor(float(y.numel())),
                ]
            )
        all_reduce_sum(totals, self.info)
        model.train(was_training)
        n = max(totals[3].item(), 1.0)
        return {
            "loss": totals[0].item() / n,
            "error": totals[1].item() / n,
            "top5_error": totals[2].item() / n,
            "images": int(totals[3].item()),
        }
