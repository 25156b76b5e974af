"""Triton kernels for fused BatchNorm(+residual add)+activation on channels_last rows.

Every kernel sees the feature map as a row-major [M, C] matrix (M = N*H*W, the
NHWC memory of a channels_last tensor), tiled in [BLOCK_M, BLOCK_C] blocks with
C the contiguous axis, and computes in float32 whatever the storage dtype.

    partial_stats_kernel  grid (C blocks, S splits): per-split (count, mean, M2) of x - x[0]
                          with a two-pass mean/M2 inside each tile, merged across
                          tiles with Chan's formula (no E[x^2] - E[x]^2 cancellation)
    finalize_kernel       grid (C blocks,): merges the S splits, writes mean and
                          invstd, updates the running statistics in place
    forward_kernel        grid (M blocks, C blocks): y = act((x - mean) * scale + beta [+ r])
    backward_sums_kernel  grid (C blocks, S splits): per-split sum(dz), sum(dz*x_hat)
    backward_kernel       grid (M blocks, C blocks): dx (and d_residual = dz)

The pre-activation z is recomputed in the backward kernels from x (and r) with the
same expression as the forward, so the activation's derivative is taken at exactly the
forward's z and nothing of size M*C but x (and r) needs to be kept. The kernels share that
code through the small jit helpers below (Triton inlines them), so the three cannot drift
apart. The activation is any of archc_triton.act_kernels (a constexpr ACT code and a
runtime slope), the same helpers the conv epilogue kernels apply.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from archc_triton.act_kernels import RELU_ACT, KernelAct, act, act_grad

# Tiles hold at most this many elements: enough work per program on a GPU, and few
# enough registers per thread at num_warps=4.
TILE_ELEMENTS = 4096
MAX_BLOCK_C = 64
# The reductions split M into at most this many programs per channel block, so a
# narrow layer (C=16: one channel block) still fills the GPU while the partial
# results stay small ([S, C] floats).
MAX_SPLITS = 512


@triton.jit
def _tile(rows, cols, cmask, M, C):
    """(mask, 64-bit offsets) of the [rows, cols] tile of a row-major [M, C] matrix."""
    mask = (rows < M)[:, None] & cmask[None, :]
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
    return mask, offs


@triton.jit
def _chan_merge(n, mean, m2, nb, mb, m2b):
    """Chan et al.: merge (count, mean, M2) with another part's (nb, mb, m2b)."""
    n_new = n + nb
    w = nb / tl.maximum(n_new, 1.0)
    delta = mb - mean
    mean = mean + delta * w
    m2 = m2 + m2b + delta * delta * n * w
    return n_new, mean, m2


@triton.jit
def _affine(mean_ptr, stat_ptr, w_ptr, b_ptr, cols, cmask, eps, FROM_VAR: tl.constexpr):
    """Per-channel (mean, invstd, scale = gamma * invstd, beta) in float32."""
    mean = tl.load(mean_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    stat = tl.load(stat_ptr + cols, mask=cmask, other=1.0).to(tl.float32)
    if FROM_VAR:
        invstd = 1.0 / tl.sqrt_rn(stat + eps)
    else:
        invstd = stat
    scale = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32) * invstd
    beta = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    return mean, invstd, scale, beta


@triton.jit
def _preact(x_ptr, r_ptr, offs, mask, mean, scale, beta, HAS_RES: tl.constexpr, Y_MASK: tl.constexpr):
    """(x, z): the tile of x and the pre-activation z = (x - mean) * scale + beta [+ r].

    The one expression for z, in the forward and both backward kernels, so the backward
    takes the activation's derivative at exactly the forward's z. x - mean before scaling:
    x*scale + (beta - mean*scale) cancels badly when |mean| >> std.
    With Y_MASK (backward only, with a residual, for "none" and relu), r_ptr holds the
    forward's output y = act(z) instead of the residual, and z is y: those derivatives
    depend on z only through z > 0, and y > 0 exactly where z > 0.
    """
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = (x - mean[None, :]) * scale[None, :] + beta[None, :]
    if HAS_RES:
        r = tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if Y_MASK:
            z = r
        else:
            z = z + r
    return x, z


@triton.jit
def _elementwise_tile(
    x_ptr,
    r_ptr,
    mean_ptr,
    stat_ptr,
    w_ptr,
    b_ptr,
    M,
    C,
    eps,
    FROM_VAR: tl.constexpr,
    HAS_RES: tl.constexpr,
    Y_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Set-up of a grid (M blocks, C blocks) program: its tile, channel parameters, x and z.

    Returns (cols, cmask, mask, offs, mean, invstd, scale, x, z).
    """
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mask, offs = _tile(rows, cols, cmask, M, C)
    mean, invstd, scale, beta = _affine(mean_ptr, stat_ptr, w_ptr, b_ptr, cols, cmask, eps, FROM_VAR)
    x, z = _preact(x_ptr, r_ptr, offs, mask, mean, scale, beta, HAS_RES, Y_MASK)
    return cols, cmask, mask, offs, mean, invstd, scale, x, z


@triton.jit
def partial_stats_kernel(
    x_ptr,
    cnt_ptr,
    mean_ptr,
    m2_ptr,
    M,
    C,
    tiles_per_prog,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per-split count, mean and M2 of x - x[0] for one block of channels ([S, C] each)."""
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    n_splits = tl.num_programs(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    # statistics of x - x[0]: sums of values far from zero (mean >> std) keep their precision
    shift = tl.load(x_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    n = tl.zeros([BLOCK_C], dtype=tl.float32)
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    # tiles are dealt round-robin, so split s always owns tile s (s < number of tiles)
    for i in range(0, tiles_per_prog):
        start = (pid_s + i * n_splits) * BLOCK_M
        mask, offs = _tile(start + tl.arange(0, BLOCK_M), cols, cmask, M, C)
        x = tl.where(mask, tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) - shift[None, :], 0.0)
        nb = tl.minimum(tl.maximum(M - start, 0), BLOCK_M).to(tl.float32)
        tile_mean = tl.sum(x, axis=0) / tl.maximum(nb, 1.0)
        d = tl.where(mask, x - tile_mean[None, :], 0.0)
        tile_m2 = tl.sum(d * d, axis=0)
        n, mean, m2 = _chan_merge(n, mean, m2, nb, tile_mean, tile_m2)
    offs = pid_s * C + cols
    tl.store(cnt_ptr + offs, n, mask=cmask)
    tl.store(mean_ptr + offs, mean, mask=cmask)
    tl.store(m2_ptr + offs, m2, mask=cmask)


@triton.jit
def finalize_kernel(
    x_ptr,
    cnt_ptr,
    pmean_ptr,
    pm2_ptr,
    mean_ptr,
    invstd_ptr,
    rmean_ptr,
    rvar_ptr,
    n_splits,
    C,
    eps,
    factor,
    UPDATE: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Merge the splits into mean and invstd; update the running statistics when UPDATE."""
    pid_c = tl.program_id(0)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    n = tl.zeros([BLOCK_C], dtype=tl.float32)
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for s in range(0, n_splits):
        offs = s * C + cols
        nb = tl.load(cnt_ptr + offs, mask=cmask, other=0.0)
        mb = tl.load(pmean_ptr + offs, mask=cmask, other=0.0)
        m2b = tl.load(pm2_ptr + offs, mask=cmask, other=0.0)
        n, mean, m2 = _chan_merge(n, mean, m2, nb, mb, m2b)
    mean = mean + tl.load(x_ptr + cols, mask=cmask, other=0.0).to(tl.float32)  # undo the shift
    var = m2 / tl.maximum(n, 1.0)
    invstd = 1.0 / tl.sqrt_rn(var + eps)
    tl.store(mean_ptr + cols, mean, mask=cmask)
    tl.store(invstd_ptr + cols, invstd, mask=cmask)
    if UPDATE:
        # as nn.BatchNorm2d: the running variance takes the unbiased batch variance
        unbiased = m2 / tl.maximum(n - 1.0, 1.0)
        rm = tl.load(rmean_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        rv = tl.load(rvar_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        rm = factor * mean + (1.0 - factor) * rm
        rv = factor * unbiased + (1.0 - factor) * rv
        tl.store(rmean_ptr + cols, rm.to(rmean_ptr.dtype.element_ty), mask=cmask)
        tl.store(rvar_ptr + cols, rv.to(rvar_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def forward_kernel(
    x_ptr,
    r_ptr,
    y_ptr,
    mean_ptr,
    stat_ptr,
    w_ptr,
    b_ptr,
    M,
    C,
    eps,
    slope,
    FROM_VAR: tl.constexpr,
    HAS_RES: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """y = act((x - mean) * gamma * invstd + beta [+ r]) for one [BLOCK_M, BLOCK_C] tile."""
    _, _, mask, offs, _, _, _, _, z = _elementwise_tile(
        x_ptr, r_ptr, mean_ptr, stat_ptr, w_ptr, b_ptr, M, C, eps, FROM_VAR, HAS_RES, False, BLOCK_M, BLOCK_C
    )
    y = act(z, slope, ACT)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def backward_sums_kernel(
    x_ptr,
    r_ptr,
    dy_ptr,
    mean_ptr,
    stat_ptr,
    w_ptr,
    b_ptr,
    part_ptr,
    M,
    C,
    eps,
    tiles_per_prog,
    slope,
    FROM_VAR: tl.constexpr,
    HAS_RES: tl.constexpr,
    Y_MASK: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per-split sum(dz) and sum(dz * x_hat) ([2, S, C]), dz = dy * act'(z)."""
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    n_splits = tl.num_programs(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mean, invstd, scale, beta = _affine(mean_ptr, stat_ptr, w_ptr, b_ptr, cols, cmask, eps, FROM_VAR)
    sum_dz = tl.zeros([BLOCK_C], dtype=tl.float32)
    sum_dzx = tl.zeros([BLOCK_C], dtype=tl.float32)
    for i in range(0, tiles_per_prog):
        rows = (pid_s + i * n_splits) * BLOCK_M + tl.arange(0, BLOCK_M)
        mask, offs = _tile(rows, cols, cmask, M, C)
        x, z = _preact(x_ptr, r_ptr, offs, mask, mean, scale, beta, HAS_RES, Y_MASK)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dz = act_grad(z, dy, slope, ACT)  # masked lanes load dy = 0: dz = 0
        x_hat = (x - mean[None, :]) * invstd[None, :]
        sum_dz += tl.sum(dz, axis=0)
        sum_dzx += tl.sum(dz * x_hat, axis=0)
    offs = pid_s * C + cols
    tl.store(part_ptr + offs, sum_dz, mask=cmask)
    tl.store(part_ptr + n_splits * C + offs, sum_dzx, mask=cmask)


@triton.jit
def backward_kernel(
    x_ptr,
    r_ptr,
    dy_ptr,
    mean_ptr,
    stat_ptr,
    w_ptr,
    b_ptr,
    sums_ptr,
    dx_ptr,
    dr_ptr,
    M,
    C,
    eps,
    inv_m,
    slope,
    FROM_VAR: tl.constexpr,
    HAS_RES: tl.constexpr,
    Y_MASK: tl.constexpr,
    ACT: tl.constexpr,
    BATCH_STATS: tl.constexpr,
    WRITE_DX: tl.constexpr,
    WRITE_DR: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """dx (batch or running statistics) and d_residual = dz for one tile."""
    cols, cmask, mask, offs, mean, invstd, scale, x, z = _elementwise_tile(
        x_ptr, r_ptr, mean_ptr, stat_ptr, w_ptr, b_ptr, M, C, eps, FROM_VAR, HAS_RES, Y_MASK, BLOCK_M, BLOCK_C
    )
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dz = act_grad(z, dy, slope, ACT)
    if WRITE_DR:
        tl.store(dr_ptr + offs, dz.to(dr_ptr.dtype.element_ty), mask=mask)
    if WRITE_DX:
        if BATCH_STATS:
            # dx = gamma*invstd/M * (M*dz - sum(dz) - x_hat*sum(dz*x_hat))
            k_dz = tl.load(sums_ptr + cols, mask=cmask, other=0.0) * inv_m
            k_dzx = tl.load(sums_ptr + C + cols, mask=cmask, other=0.0) * inv_m
            x_hat = (x - mean[None, :]) * invstd[None, :]
            dx = scale[None, :] * (dz - k_dz[None, :] - x_hat * k_dzx[None, :])
        else:
            dx = dz * scale[None, :]
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1).

    Triton reads the variable when it is imported (and when it decorates a kernel),
    so it must be set before the first `import triton` for CPU tensors to work.
    """
    return os.environ.get("TRITON_INTERPRET") == "1"


def blocks(M: int, C: int) -> tuple[int, int]:
    """Tile sizes (BLOCK_M, BLOCK_C) for an [M, C] feature map (powers of two)."""
    block_c = min(max(triton.next_power_of_2(C), 4), MAX_BLOCK_C)
    block_m = min(max(triton.next_power_of_2(M), 16), TILE_ELEMENTS // block_c)
    return block_m, block_c


def _splits(M: int, C: int, block_m: int, block_c: int, max_splits: int | None) -> tuple[int, int]:
    """(S, tiles per program) for the reductions: every split owns at least one tile."""
    tiles = triton.cdiv(M, block_m)
    cap = max_splits if max_splits is not None else max(1, MAX_SPLITS // triton.cdiv(C, block_c))
    s = max(1, min(tiles, cap))
    return s, triton.cdiv(tiles, s)


def batch_stats(
    x: torch.Tensor,
    eps: float,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    factor: float = 0.0,
    *,
    block_m: int | None = None,
    max_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel batch mean and 1/sqrt(var + eps) of x, updating the running statistics.

    Args:
        x: a contiguous [M, C] matrix (channels_last rows), M >= 1.
        eps: added to the biased variance.
        running_mean: updated in place to (1 - factor) * running_mean + factor * mean,
            when given (with running_var).
        running_var: updated in place with the unbiased variance, like running_mean.
        factor: the momentum of the update.
        block_m: rows per tile (a power of two), for tests; default from `blocks`.
        max_splits: the most programs per channel block, for tests.

    Returns:
        (mean, invstd), float32 tensors of C elements.
    """
    M, C = x.shape
    bm, bc = blocks(M, C)
    bm = block_m or bm
    s, per_prog = _splits(M, C, bm, bc, max_splits)
    part = torch.empty((3, s, C), dtype=torch.float32, device=x.device)
    mean = torch.empty(C, dtype=torch.float32, device=x.device)
    invstd = torch.empty_like(mean)
    c_blocks = triton.cdiv(C, bc)
    partial_stats_kernel[(c_blocks, s)](x, part[0], part[1], part[2], M, C, per_prog, BLOCK_M=bm, BLOCK_C=bc)
    update = running_mean is not None and running_var is not None
    rm = running_mean if update else mean
    rv = running_var if update else mean
    finalize_kernel[(c_blocks,)](
        x, part[0], part[1], part[2], mean, invstd, rm, rv, s, C, eps, factor, UPDATE=update, BLOCK_C=bc
    )
    return mean, invstd


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
    """y = act(gamma * (x - mean) * invstd + beta [+ residual]) on [M, C] rows.

    Args:
        x: a contiguous [M, C] matrix.
        residual: None, or a contiguous [M, C] matrix of x's dtype.
        mean: per-channel mean (C elements).
        stat: per-channel invstd, or the variance when `from_var`.
        weight: gamma (C elements).
        bias: beta (C elements).
        eps: added to the variance when `from_var`.
        from_var: stat is a variance (eval: the running statistics) rather than invstd.
        act: the activation (archc_triton.act_kernels.kernel_act).

    Returns:
        y, a new [M, C] matrix of x's dtype.
    """
    M, C = x.shape
    bm, bc = blocks(M, C)
    y = torch.empty_like(x)
    grid = (triton.cdiv(M, bm), triton.cdiv(C, bc))
    r = x if residual is None else residual  # never read without HAS_RES
    forward_kernel[grid](
        x, r, y, mean, stat, weight, bias, M, C, eps, act.slope,
        FROM_VAR=from_var, HAS_RES=residual is not None, ACT=act.code, BLOCK_M=bm, BLOCK_C=bc,
    )  # fmt: skip
    return y


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
    block_m: int | None = None,
    max_splits: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of `forward`: one reduction (if any sums are needed) and one elementwise pass.

    Args:
        x, residual, mean, stat, weight, bias, eps, from_var: as given to `forward`; with
            `y_mask`, `residual` is forward's output y instead.
        dy: the output gradient, a contiguous [M, C] matrix.
        batch_stats: mean/stat are this batch's statistics (their gradient flows into dx).
        need: whether to compute dx, d_residual, and (dgamma, dbeta).
        act: the activation, as given to `forward`.
        y_mask: take z > 0 from the output y passed as `residual`, for an activation whose
            `output_gives_grad` ("none", relu): a residual's backward then needs neither the
            residual nor anything recomputed from it.
        block_m, max_splits: as for `batch_stats`, for tests.

    Returns:
        (dx, d_residual, dgamma, dbeta), None where not needed; dgamma/dbeta in float32.
    """
    need_dx, need_dr, need_affine = need
    assert not y_mask or act.output_gives_grad, act
    M, C = x.shape
    bm, bc = blocks(M, C)
    bm = block_m or bm
    has_res = residual is not None
    r = x if residual is None else residual
    c_blocks = triton.cdiv(C, bc)
    sums = None
    if need_affine or (need_dx and batch_stats):
        s, per_prog = _splits(M, C, bm, bc, max_splits)
        part = torch.empty((2, s, C), dtype=torch.float32, device=x.device)
        backward_sums_kernel[(c_blocks, s)](
            x, r, dy, mean, stat, weight, bias, part, M, C, eps, per_prog, act.slope,
            FROM_VAR=from_var, HAS_RES=has_res, Y_MASK=y_mask, ACT=act.code, BLOCK_M=bm, BLOCK_C=bc,
        )  # fmt: skip
        # [2, S, C] -> [2, C]: a fixed-order sum over the splits keeps results deterministic
        sums = part.sum(dim=1)
    dx = torch.empty_like(x) if need_dx else None
    dr = torch.empty_like(r) if need_dr else None
    if need_dx or need_dr:
        grid = (triton.cdiv(M, bm), c_blocks)
        backward_kernel[grid](
            x, r, dy, mean, stat, weight, bias, sums if sums is not None else mean,
            dx if dx is not None else x, dr if dr is not None else x,
            M, C, eps, 1.0 / M, act.slope,
            FROM_VAR=from_var, HAS_RES=has_res, Y_MASK=y_mask, ACT=act.code, BATCH_STATS=batch_stats,
            WRITE_DX=need_dx, WRITE_DR=need_dr, BLOCK_M=bm, BLOCK_C=bc,
        )  # fmt: skip
    if not need_affine or sums is None:
        return dx, dr, None, None
    return dx, dr, sums[1], sums[0]
