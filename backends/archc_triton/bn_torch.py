"""The torch twin of bn_kernels: the same three functions on [M, C] rows, in plain torch ops.

The Triton kernels compute in float32 whatever the storage dtype. For dtypes they do not
cover (float64: gradient checks, exact comparisons) BNAct and the BN-act-conv unit call
these functions instead, with the same arguments and the same saved tensors, so the
autograd Functions around them are one code path and their float64 runs check that
path's structure (what is saved, what is recomputed) to rounding error.
Everything is computed in x's dtype. The activation is the table's torch form
(KernelAct.torch), and its derivative in the backward is torch's own autograd of that form
at the recomputed pre-activation.
"""

from __future__ import annotations

import torch

from archc_triton.act_kernels import RELU_ACT, KernelAct


def batch_stats(
    x: torch.Tensor,
    eps: float,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    factor: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel batch mean and 1/sqrt(var + eps) of x, updating the running statistics.

    Args:
        x: an [M, C] matrix, M >= 1.
        eps: added to the biased variance.
        running_mean: updated in place like nn.BatchNorm2d's, when given (with running_var).
        running_var: updated in place with the unbiased variance.
        factor: the momentum of the update.

    Returns:
        (mean, invstd), C elements each, in x's dtype.
    """
    m = x.shape[0]
    var, mean = torch.var_mean(x, dim=0, correction=0)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.mul_(1 - factor).add_(mean.to(running_mean.dtype), alpha=factor)
            unbiased = var * (m / max(m - 1, 1))
            running_var.mul_(1 - factor).add_(unbiased.to(running_var.dtype), alpha=factor)
    return mean, torch.rsqrt(var + eps)


def _scale_shift(
    x: torch.Tensor, stat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, from_var: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(invstd, scale = gamma * invstd, beta), in x's dtype."""
    stat = stat.to(x.dtype)
    invstd = torch.rsqrt(stat + eps) if from_var else stat
    return invstd, weight.to(x.dtype) * invstd, bias.to(x.dtype)


def forward(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    mean: torch.Tensor,
    stat: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    from_var: bool,
    act: KernelAct = RELU_ACT,
) -> torch.Tensor:
    """y = act(gamma * (x - mean) * invstd + beta [+ residual]), as bn_kernels.forward."""
    _, scale, beta = _scale_shift(x, stat, weight, bias, eps, from_var)
    z = (x - mean.to(x.dtype)) * scale + beta
    if residual is not None:
        z = z + residual
    return act.torch(z)


def act_grad(act: KernelAct, z: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """dy * act'(z), by torch's autograd of the activation's torch form (its own break-point conventions)."""
    if act.name == "none":
        return dy
    with torch.enable_grad():
        zz = z.detach().requires_grad_()
        (dz,) = torch.autograd.grad(act.torch(zz), zz, dy)
    return dz


def backward(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    dy: torch.Tensor,
    mean: torch.Tensor,
    stat: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    from_var: bool,
    batch_stats: bool,
    need: tuple[bool, bool, bool],
    *,
    act: KernelAct = RELU_ACT,
    y_mask: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of `forward`, recomputing the pre-activation from x (and the residual), as bn_kernels.backward.

    With `y_mask` ("none" and relu only), `residual` is forward's output y, which stands in for z.

    Returns:
        (dx, d_residual, dgamma, dbeta), None where `need` does not ask for them.
    """
    need_dx, need_dr, need_affine = need
    invstd, scale, beta = _scale_shift(x, stat, weight, bias, eps, from_var)
    x_hat = (x - mean.to(x.dtype)) * invstd
    z = x_hat * weight.to(x.dtype) + beta
    if residual is not None:
        z = residual if y_mask else z + residual
    dz = act_grad(act, z, dy.to(x.dtype))
    sum_dz = dz.sum(dim=0)
    sum_dzx = (dz * x_hat).sum(dim=0)
    dx = None
    if need_dx:
        if batch_stats:
            m = x.shape[0]
            dx = scale * (dz - sum_dz / m - x_hat * (sum_dzx / m))
        else:
            dx = dz * scale
    dr = dz if need_dr else None
    if not need_affine:
        return dx, dr, None, None
    return dx, dr, sum_dzx, sum_dz
