"""The openvino backend: the eval graph exported to ONNX by archc and compiled by OpenVINO for the CPU.

As the onnxruntime backend: archc's eval passes fold every BN into its conv and fuse the
residual adds and ReLUs, the torch backend lowers the result in eager ops, and archc's
exporter writes it as ONNX; here OpenVINO's CPU plugin compiles and runs it, one compiled
model per batch size (see `archc_openvino.compiled`). Inference only.
"""

from __future__ import annotations

from typing import Any

from archc.engine_backend import EngineBackend

__version__ = "0.1.0"
__all__ = ["OpenVinoBackend"]

INSTALL = "pip install 'archc[openvino]' (openvino, onnx, onnxscript)"

RUNNER_IMPORTS = "import numpy as np\nimport openvino as ov"
SOURCE = '''\
def load(threads=None, batch=None, device="CPU"):
    """MODEL compiled for `device` (float32; the batch fixed to `batch` when given); returns run(x) -> numpy."""
    core = ov.Core()
    model = core.read_model(MODEL)
    if batch:
        model.reshape([batch, {shape}])
    config = {{"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = core.compile_model(model, device, config).create_infer_request()

    def run(x):
        request.infer({{0: x}})
        got = [np.array(request.get_tensor(name).data) for name in OUTPUTS]
        return _pack(got)

    return run
'''


class OpenVinoBackend(EngineBackend):
    """Lower an eval graph to an nn.Module that runs OpenVINO (CPU inference)."""

    name = "openvino"
    version = __version__
    product = "OpenVINO"
    install = INSTALL
    runner_imports = RUNNER_IMPORTS
    runner = SOURCE

    def module(self) -> Any:
        """OvModule: see `archc_openvino.compiled`."""
        from archc_openvino.compiled import OvModule

        return OvModule
