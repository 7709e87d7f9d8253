"""The sum over slot pairs of the neighbour-list ANI's angular AEV as
hand-written Triton kernels (forward and backward), for the packages
`mlff-md compile --kernels triton` builds (python/ani_nl_triton.py) and
benches/fused_angular.py's forms fused_triton_*:

    G[i, z, q, a] = sum_t ang[i, t, z] [pair[i, t] == q] rad[i, t, a]

ang float32 [N, T, 8], rad float32 [N, T, 4], pair int64 [N, T] (species
pair 0-9 of slot pair t) -> G float32 [N, 8, 10 x 4] (the model's AEV
order). Backward: grad_ang[i, t, z] = sum_a rad[i, t, a] g[i, z, pair, a],
grad_rad[i, t, a] = sum_z ang[i, t, z] g[i, z, pair, a].

Forward: one program per row (atom), in one of four variants (VARIANTS):
masked sums per species pair over blocks of 32 pairs; a product with the
0/1 matrix [16, 32] of each block's species pairs in full float32 (tl.dot,
input_precision "ieee": exact copies); the same over the whole row in one
block; and that with input_precision "tf32x3" (tensor cores, three TF32
products: each selected value is rounded to about float32's precision,
not copied exactly). Backward: one program per row and block of 64 pairs,
each pair reading its species pair's 32 values of the row's gradient (a
gather: exact). Every sum runs in a fixed order, so the kernels are
deterministic. T (pairs per row) is a compile-time constant (one build per
row length; it also keeps Triton's CPU interpreter working).

Registered with torch.library.triton_op, so torch.compile and
AOTInductor put the kernels into what they compile. TRITON_INTERPRET=1
runs them on a CPU (uncompiled): python/check_ani_triton.py checks them
against the model file that way in make test.
"""

import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

Z, A, PAIRS = 8, 4, 10


@triton.jit
def _forward(ang, rad, pair, out, T: tl.constexpr, BLOCK_T: tl.constexpr, MODE: tl.constexpr):
    """MODE "sums": per species pair, a masked sum over the block's pairs;
    "ieee" / "tf32x3": one product with the block's 0/1 species-pair matrix
    [16, BLOCK_T] (tl.dot in full float32: exact copies; or on tensor cores
    with three TF32 products: about float32's rounding)."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, 32)  # z * 4 + a
    q = tl.arange(0, 16)
    acc = tl.zeros([16, 32], dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        m = t < T
        # w[t, z * 4 + a] = ang[t, z] rad[t, a]
        a_t = tl.load(ang + n * T * 8 + t[:, None] * 8 + (c // 4)[None, :], mask=m[:, None], other=0.0)
        r_t = tl.load(rad + n * T * 4 + t[:, None] * 4 + (c % 4)[None, :], mask=m[:, None], other=0.0)
        p_t = tl.load(pair + n * T + t, mask=m, other=-1)
        w = a_t * r_t
        if MODE == "sums":
            for k in tl.static_range(10):
                part = tl.sum(tl.where((p_t == k)[:, None], w, 0.0), axis=0)  # [32]
                acc = tl.where((q == k)[:, None], acc + part[None, :], acc)
        else:
            hit = (q[:, None] == p_t[None, :]).to(tl.float32)
            acc = tl.dot(hit, w, acc, input_precision=MODE)
    # out[n, z, q, a] = acc[q, z * 4 + a]
    offs = n * 320 + (c // 4)[None, :] * 40 + q[:, None] * 4 + (c % 4)[None, :]
    tl.store(out + offs, acc, mask=(q < 10)[:, None])


@triton.jit
def _backward(ang, rad, pair, g, g_ang, g_rad, T: tl.constexpr, BLOCK_T: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    m = t < T
    c = tl.arange(0, 32)
    p_t = tl.load(pair + n * T + t, mask=m, other=0)
    # sel[t, z * 4 + a] = g[n, z, pair_t, a] (the row's 320 values, cached)
    sel = tl.load(g + n * 320 + (c // 4)[None, :] * 40 + p_t[:, None] * 4 + (c % 4)[None, :],
                  mask=m[:, None], other=0.0)
    a_t = tl.load(ang + n * T * 8 + t[:, None] * 8 + (c // 4)[None, :], mask=m[:, None], other=0.0)
    r_t = tl.load(rad + n * T * 4 + t[:, None] * 4 + (c % 4)[None, :], mask=m[:, None], other=0.0)
    s3 = tl.reshape(sel, [BLOCK_T, 8, 4])
    ga = tl.sum(s3 * tl.reshape(r_t, [BLOCK_T, 8, 4]), axis=2)  # [BLOCK_T, 8]
    gr = tl.sum(s3 * tl.reshape(a_t, [BLOCK_T, 8, 4]), axis=1)  # [BLOCK_T, 4]
    z = tl.arange(0, 8)
    a = tl.arange(0, 4)
    tl.store(g_ang + n * T * 8 + t[:, None] * 8 + z[None, :], ga, mask=m[:, None])
    tl.store(g_rad + n * T * 4 + t[:, None] * 4 + a[None, :], gr, mask=m[:, None])


def _launch(kernel):
    # the interpreter's kernels are not triton.jit functions to wrap_triton
    return kernel if os.environ.get("TRITON_INTERPRET") == "1" else wrap_triton(kernel)


# angular_sum's forward kernels (variant: index): masked sums over blocks of
# 32 pairs; tl.dot over blocks of 32 pairs; tl.dot over the whole row in one
# block; the same with three TF32 products (not an exact copy)
VARIANTS = ["sums", "dot", "dot_row", "dot_row_tf32x3"]

# The most pairs the dot_row variants take in one block: its [ROW_BLOCK, 32]
# float32 products are 64 KiB. The rows measured on the GPU (at most 30
# inner slots, 435 pairs) fit one block; a dense inner list of 46 slots
# (1,035 pairs) would need four times that in one tile.
ROW_BLOCK = 512


@triton_op("mlffmd::angular_sum", mutates_args=())
def angular_sum(ang: torch.Tensor, rad: torch.Tensor, pair: torch.Tensor,
                variant: int) -> torch.Tensor:
    n, t = pair.shape
    out = torch.empty(n, Z, PAIRS * A, device=ang.device, dtype=torch.float32)
    # the dot_row variants take a row's pairs in one block, up to ROW_BLOCK
    # pairs; longer rows (more than 32 inner slots) loop over blocks of that
    row = min(max(16, triton.next_power_of_2(t)), ROW_BLOCK)
    _launch(_forward)[(n,)](ang, rad, pair, out, T=t,
                            BLOCK_T=row if variant >= 2 else 32,
                            MODE=["sums", "ieee", "ieee", "tf32x3"][variant])
    return out


@triton_op("mlffmd::angular_sum_backward", mutates_args=())
def angular_sum_backward(ang: torch.Tensor, rad: torch.Tensor, pair: torch.Tensor,
                         g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, t = pair.shape
    g_ang = torch.empty_like(ang)
    g_rad = torch.empty_like(rad)
    block = 64
    _launch(_backward)[(n, triton.cdiv(t, block))](ang, rad, pair, g, g_ang, g_rad,
                                                       T=t, BLOCK_T=block)
    return g_ang, g_rad


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:3])


def _grad(ctx, g):
    ang, rad, pair = ctx.saved_tensors
    g_ang, g_rad = angular_sum_backward(ang, rad, pair, g.contiguous())
    return g_ang, g_rad, None, None


angular_sum.register_autograd(_grad, setup_context=_setup)


def reference(ang, rad, pair):
    """The same sum in plain PyTorch (for checks)."""
    hit = (pair.unsqueeze(2) == torch.arange(PAIRS, device=pair.device)).to(ang.dtype)
    g = torch.einsum("ntz,ntq,nta->nzqa", ang, hit, rad)
    return g.reshape(g.size(0), Z, PAIRS * A)
