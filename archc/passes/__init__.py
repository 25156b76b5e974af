"""IR -> IR passes and the PassManager that runs them."""

from archc.passes import dce, fold_bn, freeze, fuse, layout  # noqa: F401  (registers the passes)
from archc.passes.manager import PASSES, Pass, PassManager, PassRecord, register

# The pipelines `--mode` picks. Train keeps every parameter and buffer name of the
# spec, so a checkpoint moves between modes and backends; eval folds BN away.
PIPELINES = {
    "train": ["dce", "fuse_train", "channels_last"],
    "eval": ["dce", "fold_bn", "fuse_eval", "channels_last"],
}

__all__ = ["PASSES", "PIPELINES", "Pass", "PassManager", "PassRecord", "register"]
