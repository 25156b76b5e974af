"""The BN-act-conv unit: conv(act(bn(x))) that keeps x for backward, not the activation.

In eager PyTorch, BN -> activation -> conv keeps two tensors of the feature map's size
alive until backward: BN's input x, and the activation's output a, which the conv saves
for its weight gradient (ReLU, sigmoid and tanh save that same a for their derivative;
most others, SiLU for one, save their input, the BN output, as a third map). A fused
BN+activation (BNAct) alone still hands a to the conv, which saves it. This unit saves
only x and per-channel statistics and recomputes a = act(bn(x)) in backward: one
elementwise pass over x, the cheap part of the layer, instead of holding a from the
forward to the backward. That is the InPlace-ABN class of saving, taken at the conv's
input. The activation is the BN module's (BNAct.kernel_act): any of archc_triton.act_kernels.

The triton backend lowers every `bn_act` without a residual whose only reader is a conv
to this unit (ResNet-50: 32 of its 49 BN+ReLU, the two inside each bottleneck). The BN
keeps its own module (a BNAct, for the parameters, statistics and state_dict keys) and the
conv its nn.Conv2d; the generated forward calls `bn_act_conv_unit(x, bn, conv)` instead of
one and then the other.

forward:  mean, invstd = batch statistics of x (running statistics updated), as BNAct
          a = act(gamma * (x - mean) * invstd + beta)       (Triton kernel, or bn_torch)
          y = conv(a, W, b)                                   (cuDNN / ATen)
backward: a = the same expression again, from x and the saved statistics
          da, dW, db = convolution backward (ATen, the kernels autograd would use)
          dx, dgamma, dbeta = BN-act backward of da             (Triton kernels, or bn_torch)

Under torch.autocast the conv computes in autocast's dtype, as F.conv2d would; the
weight gradient is returned in the weight's own dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from archc_triton.act_kernels import KernelAct
from archc_triton.bn_act import BNAct, _nchw, _rows, kernel_ops, statistics
from archc_triton.dispatch import compute_dtype


class _BNActConvFunction(torch.autograd.Function):
    """conv(act(bn(x))) saving x and the statistics; the activation is recomputed in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        conv_weight: torch.Tensor,
        conv_bias: torch.Tensor | None,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        batch_stats: bool,
        update: bool,
        factor: float,
        eps: float,
        conv: tuple[Any, ...],
        dtype: torch.dtype,
        ops: Any,
        act: KernelAct,
    ) -> torch.Tensor:
        mean, stat = statistics(ops, _rows(x), running_mean, running_var, batch_stats, update, factor, eps)
        a = _nchw(ops.forward(_rows(x), None, mean, stat, weight, bias, eps, from_var=not batch_stats, act=act), x)
        cb = None if conv_bias is None else conv_bias.to(dtype)
        with torch.autocast(x.device.type, enabled=False):  # the operands are cast to `dtype` here
            y = F.conv2d(a.to(dtype), conv_weight.to(dtype), cb, *conv)
        del a  # the point of the unit: the activation does not outlive the forward
        if not batch_stats:
            # a later train step updates the buffers in place; keep this step's values
            mean, stat = mean.clone(), stat.clone()
        ctx.save_for_backward(x, weight, bias, mean, stat, conv_weight)
        ctx.batch_stats, ctx.eps, ctx.conv, ctx.dtype, ctx.ops, ctx.act = batch_stats, eps, conv, dtype, ops, act
        ctx.has_conv_bias = conv_bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, bias, mean, stat, conv_weight = ctx.saved_tensors
        need_x, need_w, need_b, need_cw, need_cb = ctx.needs_input_grad[:5]
        stride, padding, dilation, groups = ctx.conv
        # the recompute: the same kernel (or bn_torch expression) as the forward, so a is bit-identical
        a = ctx.ops.forward(
            _rows(x), None, mean, stat, weight, bias, ctx.eps, from_var=not ctx.batch_stats, act=ctx.act
        )
        a = _nchw(a, x).to(ctx.dtype)
        need_da = need_x or need_w or need_b
        da, dcw, dcb = torch.ops.aten.convolution_backward(
            dy.to(ctx.dtype),
            a,
            conv_weight.to(ctx.dtype),
            [conv_weight.shape[0]] if ctx.has_conv_bias else None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [need_da, need_cw, need_cb and ctx.has_conv_bias],
        )
        del a
        dx = dw = db = None
        if need_da:
            da_rows = _rows(da.to(x.dtype).contiguous(memory_format=torch.channels_last))
            dx, _, dw, db = ctx.ops.backward(
                _rows(x),
                None,
                da_rows,
                mean,
                stat,
                weight,
                bias,
                ctx.eps,
                from_var=not ctx.batch_stats,
                batch_stats=ctx.batch_stats,
                need=(need_x, False, need_w or need_b),
                act=ctx.act,
            )
        return (
            None if dx is None else _nchw(dx, x),
            dw.to(weight.dtype) if need_w else None,
            db.to(bias.dtype) if need_b else None,
            dcw.to(conv_weight.dtype) if need_cw else None,
            dcb.to(conv_weight.dtype) if need_cb and dcb is not None else None,
            *([None] * 10),
        )


def bn_act_conv_unit(x: torch.Tensor, bn: BNAct, conv: nn.Conv2d) -> torch.Tensor:
    """conv(act(bn(x))) with bn's activation, keeping only x and per-channel statistics for backward.

    The same values, gradients and running-statistics updates as `conv(bn(x))` with the
    two modules, within the kernels' rounding.

    Args:
        x: the BN input, N x C x H x W (NCHW or channels_last).
        bn: a BNAct without residual: its parameters, statistics and train/eval mode are used.
        conv: the nn.Conv2d that reads the activation (zero padding).

    Returns:
        The conv output, in autocast's dtype under autocast, else x's.

    Raises:
        BackendError, ValueError: as BNAct.
    """
    prepared = bn.prepare(x, None)
    if prepared is None:  # an empty batch: nothing to normalise
        return conv(torch.empty_like(x, memory_format=torch.channels_last))
    x, _, batch_stats, update, factor = prepared
    ops, reason = kernel_ops(x)
    bn.record_call(reason)
    dtype = compute_dtype(x) if x.dtype != torch.float64 else x.dtype
    args = (conv.stride, conv.padding, conv.dilation, conv.groups)
    return _BNActConvFunction.apply(
        x,
        bn.weight,
        bn.bias,
        conv.weight,
        conv.bias,
        bn.running_mean,
        bn.running_var,
        batch_stats,
        update,
        factor,
        bn.eps,
        args,
        dtype,
        ops,
        bn.kernel_act,
    )
