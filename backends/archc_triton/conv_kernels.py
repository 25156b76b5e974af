"""Triton kernels behind FusedConv: a 1x1-conv GEMM with a fused epilogue, and the epilogue alone.

Both kernels read and write channels_last (NHWC) memory: a feature map is then a dense
[N*H*W, C] row-major matrix, so a 1x1 conv is a plain GEMM and a per-channel epilogue is a
2D tile walk with the channel index contiguous.

Whether these functions are compiled for the GPU or run in Triton's CPU interpreter is
fixed when this module is imported (TRITON_INTERPRET=1 then), because `triton.jit`
decides at decoration time; `INTERPRETED` records which. The kernels call only Triton
builtins, not helpers such as tl.cdiv or tl.zeros that are themselves jit functions: those
were decorated when triton was imported, and the interpreter cannot run them if that import
came before TRITON_INTERPRET=1 was set. (The module's own jit helper, `_epilogue`, is
decorated with the kernels, and the activation helpers of archc_triton.act_kernels when this
module imports them, so they are interpreted exactly when the kernels are.)

The epilogue's activation is any of archc_triton.act_kernels: a constexpr ACT code and a
runtime `slope`, the same helpers the BN kernels apply.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton import knobs

from archc_triton.act_kernels import act

# read once, at the same moment the decorators below read it
INTERPRETED: bool = bool(knobs.runtime.interpret)


@triton.jit
def _epilogue(acc, b_ptr, r_ptr, y_ptr, cols, c_mask, offs, mask, slope, HAS_RES: tl.constexpr, ACT: tl.constexpr):
    """Store act(acc + b[c] (+ r)) to y: the epilogue of both kernels, in fp32 on acc."""
    # one bias vector per tile instead of a gather per element
    bias = tl.load(b_ptr + cols, mask=c_mask, other=0.0).to(tl.float32)
    acc = acc + bias[None, :]
    if HAS_RES:
        acc = acc + tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    acc = act(acc, slope, ACT)
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def conv1x1_gemm_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    r_ptr,
    y_ptr,
    M,
    N,
    K,
    OHW,
    OW,
    stride_xb,
    stride_xh,
    stride_xw,
    stride_xc,
    stride_wn,
    stride_wk,
    slope,
    HAS_RES: tl.constexpr,
    ACT: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """y[m, n] = act(sum_k x[m, k] * w[n, k] + b[n] (+ r[m, n])) for one BLOCK_M x BLOCK_N tile.

    Rows m enumerate output pixels (b, oh, ow); x is addressed through its strides, with
    the conv stride already folded into stride_xh / stride_xw, so a strided 1x1 conv reads
    the subsampled pixels in place. y and r are dense [M, N] (channels_last).
    """
    pid = tl.program_id(0)
    # plain ceil-division, not tl.cdiv (a jit function; see the module docstring)
    num_pid_m = (M + BLOCK_M - 1) // BLOCK_M
    num_pid_n = (N + BLOCK_N - 1) // BLOCK_N
    # grouped ordering: GROUP_M row-tiles share each column of weight tiles while it is in L2
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_mask = rm < M
    n_mask = rn < N

    # pixel index -> (image, row, column) once per tile, in int64 so large maps cannot overflow
    rm64 = rm.to(tl.int64)
    img = rm64 // OHW
    rest = rm64 % OHW
    row_off = img * stride_xb + (rest // OW) * stride_xh + (rest % OW) * stride_xw
    x_ptrs = x_ptr + row_off[:, None] + rk[None, :] * stride_xc
    w_ptrs = w_ptr + rk[:, None] * stride_wk + rn[None, :] * stride_wn

    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)  # not tl.zeros (a jit function)
    for k0 in range(0, K, BLOCK_K):
        k_mask = (k0 + rk) < K
        a = tl.load(x_ptrs, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if UPCAST:
            # the interpreter stores bf16 as raw uint16 and its dot is a numpy matmul on them
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=INPUT_PRECISION)
        x_ptrs += BLOCK_K * stride_xc
        w_ptrs += BLOCK_K * stride_wk

    # epilogue in fp32 on the accumulator, one store of the output dtype
    offs = rm64[:, None] * N + rn[None, :]
    mask = m_mask[:, None] & n_mask[None, :]
    _epilogue(acc, b_ptr, r_ptr, y_ptr, rn, n_mask, offs, mask, slope, HAS_RES, ACT)


@triton.jit
def bias_act_kernel(
    y_ptr,
    b_ptr,
    r_ptr,
    M,
    C,
    slope,
    HAS_RES: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """In place on a dense [M, C] (channels_last) y: y = act(y + b[c] (+ r)), one tile per program."""
    rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = rc < C
    mask = (rm < M)[:, None] & c_mask[None, :]
    offs = rm[:, None] * C + rc[None, :]
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    _epilogue(y, b_ptr, r_ptr, y_ptr, rc, c_mask, offs, mask, slope, HAS_RES, ACT)
