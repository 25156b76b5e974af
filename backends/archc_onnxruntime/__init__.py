"""The onnxruntime backend: the eval graph exported to ONNX by archc and run by an onnxruntime session.

archc's eval passes fold every BN into its conv and fuse the residual adds and ReLUs; the
torch backend lowers the result in eager ops, archc's exporter (the one behind `archc
export`) writes it as ONNX, and onnxruntime optimises and runs it. Inference only.
"""

from __future__ import annotations

from typing import Any

from archc.engine_backend import EngineBackend

__version__ = "0.1.0"
__all__ = ["OnnxRuntimeBackend"]

INSTALL = "pip install 'archc[onnxruntime]' (onnxruntime, onnx, onnxscript)"

RUNNER_IMPORTS = "import onnxruntime as ort"
SOURCE = '''\
def load(threads=None, optimization=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    """An InferenceSession for MODEL; returns run(x) -> the net's output(s) as numpy arrays."""
    options = ort.SessionOptions()
    options.graph_optimization_level = optimization
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(MODEL, options, providers=["CPUExecutionProvider"])

    def run(x):
        got = session.run(OUTPUTS, {{"input": x}})
        return _pack(got)

    return run
'''


class OnnxRuntimeBackend(EngineBackend):
    """Lower an eval graph to an nn.Module that runs onnxruntime (CPU inference)."""

    name = "onnxruntime"
    version = __version__
    product = "onnxruntime"
    install = INSTALL
    runner_imports = RUNNER_IMPORTS
    runner = SOURCE

    def module(self) -> Any:
        """OrtModule: see `archc_onnxruntime.session`."""
        from archc_onnxruntime.session import OrtModule

        return OrtModule
