"""The runtime of the generated torch source: Scope, init_weights, FrozenBatchNorm2d, FusedConv2d, StochasticDepth.

Generated files stay standalone: codegen copies the source text of the definitions here
(each top-level class, function or assignment, by name) into every file that needs them,
without importing this module, so `import archc_torch` does not load torch. This module is
for ruff and the tests, which check these definitions as ordinary code.
"""

import torch
from torch import nn


class Scope(nn.Module):
    """A named group of layers: a block, a stage or a repeat of the spec."""


def init_weights(model: nn.Module) -> None:
    """He-normal convs (fan_out), BN weight 1 and bias 0, as torchvision's ResNet."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class FrozenBatchNorm2d(nn.Module):
    """BN as a fixed affine from its running statistics, in train() and eval() alike.

    The buffers have nn.BatchNorm2d's names (weight, bias, running_mean, running_var,
    num_batches_tracked), so its checkpoints load; nothing here is a parameter, so no
    optimiser changes it.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype)[None, :, None, None] + shift.to(x.dtype)[None, :, None, None]


ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise_")


class FusedConv2d(nn.Conv2d):
    """An nn.Conv2d (same parameters) with its epilogue: y = act(conv(x) + bias [+ r]).

    On CPU in float32 without autograd, one oneDNN call does the conv, the bias, the add and
    the ReLU (the CPU kernels torch.compile uses); with `into_r`, the result is written into
    `r`, a buffer nothing reads afterwards. Elsewhere (GPU, float64, autocast, gradients,
    torch.compile tracing): the same maths in eager ops.
    """

    # keep the weight reordered into oneDNN's blocked layout (see _weight_for)
    prepack = ONEDNN and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
    packed_shapes = 4  # input shapes whose reordered weight is kept (each is a copy of the weight)

    def __init__(self, *args, act: str = "none", into_r: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.act = act
        self.into_r = into_r

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, act={self.act!r}" + (", into_r=True" if self.into_r else "")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_packed", None)  # a cache of the weight (a oneDNN tensor), rebuilt on the next call
        return state

    def _weight_for(self, x: torch.Tensor) -> torch.Tensor:
        """The weight in oneDNN's blocked layout for x's shape, reordered once per weight version and shape.

        Given the plain weight, oneDNN reorders it on every call (a copy of every weight per forward).
        The layout it picks depends on the whole input shape, batch included, so up to the last few
        shapes are kept (packed_shapes). The cache is not state: state_dict and load_state_dict see only `weight`,
        and any change to it (load_state_dict, an in-place edit) moves its version, which clears the cache.
        """
        if not self.prepack:
            return self.weight
        w = self.weight
        version = (w.data_ptr(), w._version)
        cache = self.__dict__.get("_packed")
        if cache is None or cache[0] != version:
            cache = self.__dict__["_packed"] = (version, {})
        shape = tuple(x.shape)
        packed = cache[1].get(shape)
        if packed is None:
            if len(cache[1]) >= self.packed_shapes:
                del cache[1][next(iter(cache[1]))]  # the oldest shape
            packed = cache[1][shape] = torch.ops.mkldnn._reorder_convolution_weight(
                w, self.padding, self.stride, self.dilation, self.groups, list(shape)
            )
        return packed

    def forward(self, x: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        w, b, relu = self.weight, self.bias, self.act == "relu"
        if (
            ONEDNN
            and x.device.type == "cpu"
            and x.dtype == w.dtype == torch.float32
            and x.numel() > 0
            and (r is None or (r.device.type == "cpu" and r.dtype == torch.float32))
            and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, w, b, r)))
            and not torch.compiler.is_compiling()
        ):
            args = (self._weight_for(x), b, self.padding, self.stride, self.dilation, self.groups)
            if r is None:
                return torch.ops.mkldnn._convolution_pointwise(x, *args, "relu" if relu else "none", [], "")
            unary = "relu" if relu else None
            if self.into_r:
                return torch.ops.mkldnn._convolution_pointwise_.binary(r, x, *args, "add", 1.0, unary, [], "")
            return torch.ops.mkldnn._convolution_pointwise.binary(x, r, *args, "add", 1.0, unary, [], "")
        y = super().forward(x)
        if r is not None:
            y = y.add_(r)
        return torch.relu_(y) if relu else y


class StochasticDepth(nn.Module):
    """Stochastic depth per sample: torchvision's StochasticDepth(p, mode="row").

    In training, each sample of the batch is kept with probability 1 - p and scaled by
    1 / (1 - p), or zeroed; in eval mode, or at p = 0, the input is returned as it is. The
    mask comes from torch's default generator, so torch.manual_seed reproduces it.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    @staticmethod
    def drop(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
        if not training or p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
        return x * keep.div_(1.0 - p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(x, self.p, self.training)
