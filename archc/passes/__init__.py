"""IR -> IR passes and the PassManager that runs them."""

from archc.passes import dce  # noqa: F401  (registers the pass)
from archc.passes.manager import PASSES, Pass, PassManager, PassRecord, register

DEFAULT_PIPELINE = ["dce"]

__all__ = ["DEFAULT_PIPELINE", "PASSES", "Pass", "PassManager", "PassRecord", "register"]
