"""The neighbour-list ANI's networks (python/export_ani_nl.py, _networks) with
every layer's product a hand-written Triton kernel on tensor cores with
three TF32 products (tl.dot input_precision "tf32x3": each product rounded
to about float32's precision, accumulated in float32), and the CELU in the
kernel: what `mlff-md compile --kernels triton-nets` adds to the angular
kernels (python/ani_nl_triton.py).

Why: in the file the ensemble's layers are cuBLAS float32 GEMMs on the SIMT
units (TF32 stays off: the model's 0/1 matmuls must copy values exactly),
7.6 of the force call's 17 ms at alanine dipeptide x 4096 on an H100, with
CELU and its backward as separate passes over the activations. Hopper's
TF32 tensor-core instruction (wgmma) takes only operands contiguous along
the summed dimension, so the activations here are atom-major ([rows, atoms,
features], features contiguous), where the file's are feature-major; a
kernel reading them along the atoms ran 1.5-3.4x slower (the first kernel of this
kind, benches/results/pt2_nets_NVIDIA-H100_2026-12-06/call3_gemm_shapes).

    forward   H = celu(X W^T)        X [B, N, K] atom-major, W [B, M, K]
    backward  dX = (dH * celu'(H)) W  celu'(z) = 1 for z > 0, else h / alpha + 1

The first layer's W stacks the members' rows ([groups, members x hidden,
inputs]); its output is written member by member ([groups x members, atoms,
hidden]), the layout of the later layers' inputs. The output layer (one
row per member) stays a product and a sum.

One program per output tile, float32 accumulation in a fixed order (the
kernels are deterministic); shapes and strides are compile-time constants
(one build per layer shape; it also keeps Triton's CPU interpreter working).
Registered with torch.library.triton_op, so AOTInductor puts the kernels in
its package; TRITON_INTERPRET=1 runs them on a CPU (uncompiled), which is
how python/check_ani_triton.py checks them in make test.
"""

import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from angular_triton import _launch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _layer(a, b, h, c,
           s_ab: tl.constexpr, s_am: tl.constexpr, s_ak: tl.constexpr,
           s_bb: tl.constexpr, KB: tl.constexpr, s_bkr: tl.constexpr, s_bk: tl.constexpr,
           s_bn: tl.constexpr,
           s_cb: tl.constexpr, MB: tl.constexpr, s_cmr: tl.constexpr, s_cm: tl.constexpr,
           s_cn: tl.constexpr,
           M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, ALPHA: tl.constexpr,
           CELU: tl.constexpr, CELU_GRAD: tl.constexpr,
           BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """C[b, m, n] = sum_k A[b, m, k] B'[b, k, n], B' = B, or B * celu'(H)
    with CELU_GRAD (H read where B is); C = celu(C) with CELU.
    B's k runs in chunks of KB (chunk stride s_bkr, within it s_bk), C's m
    in chunks of MB (s_cmr, s_cm): the members of the first layer."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        x = tl.load(a + pid_b * s_ab + rm[:, None] * s_am + kk[None, :] * s_ak,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        offs = pid_b * s_bb + (kk // KB)[:, None] * s_bkr + (kk % KB)[:, None] * s_bk \
            + rn[None, :] * s_bn
        m_b = (kk[:, None] < K) & (rn[None, :] < N)
        y = tl.load(b + offs, mask=m_b, other=0.0)
        if CELU_GRAD:
            hv = tl.load(h + offs, mask=m_b, other=0.0)
            y = y * tl.where(hv > 0.0, 1.0, hv / ALPHA + 1.0)
        acc = tl.dot(x, y, acc, input_precision="tf32x3")
    if CELU:
        acc = tl.where(acc > 0.0, acc, ALPHA * (tl.exp(tl.minimum(acc, 0.0) / ALPHA) - 1.0))
    tl.store(c + pid_b * s_cb + (rm // MB)[:, None] * s_cmr + (rm % MB)[:, None] * s_cm
             + rn[None, :] * s_cn, acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


# Tiles (BM, BN, BK, warps, stages) tried per shape at compile time
# (benches/network_tiles.py times them and more); the interpreter takes the
# first. Six more (BM x BN up to 256 x 128, 4 stages) doubled the compile
# (233 s against 124) for the same step (15.008 against 15.034 ms at
# alanine dipeptide x 4096, H100).
TILES = ((128, 128, 64, 8, 3), (128, 128, 32, 8, 3), (128, 64, 32, 4, 3), (64, 64, 32, 4, 3))
if INTERPRETED:
    _tuned = _layer
    FIXED_TILE = dict(zip(("BM", "BN", "BK"), TILES[0][:3]))
else:
    _tuned = triton.autotune(
        configs=[triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=st)
                 for bm, bn, bk, w, st in TILES],
        key=["M", "N", "K", "s_bk", "s_bn", "CELU_GRAD"])(_layer)
    FIXED_TILE = {}


def _run(a, b, h, out, m, n, k, b_strides, c_strides, alpha, celu, celu_grad, tile):
    """out <- A B' (see _layer): a [batch, m, k] contiguous; b_strides
    (s_bb, KB, s_bkr, s_bk, s_bn) and c_strides (s_cb, MB, s_cmr, s_cm, s_cn)
    address B' [batch, k, n] in b (and h) and C [batch, m, n] in out. tile
    (BM, BN, BK, warps, stages): that tile (benches/network_tiles.py), None:
    the autotuned one."""
    nb = a.size(0)

    def grid(meta):
        return (triton.cdiv(m, meta["BM"]), triton.cdiv(n, meta["BN"]), nb)
    if tile is None:
        kernel, launch = _launch(_tuned), FIXED_TILE
    else:
        kernel = _layer
        launch = dict(zip(("BM", "BN", "BK", "num_warps", "num_stages"), tile))
    kernel[grid](a, b, h, out, a.stride(0), a.stride(1), a.stride(2), *b_strides, *c_strides,
                 M=m, N=n, K=k, ALPHA=alpha, CELU=celu, CELU_GRAD=celu_grad, **launch)


def _atom_major(n, k):
    """B' or C strides of a contiguous [batch, n atoms, k features] tensor
    read as [batch, k, n]."""
    return (n * k, k, 0, 1, k)


def _by_member(per, n, chunk):
    """The same for [batch x per, n, chunk] read as [batch, per x chunk, n]
    (the first layer's members, one after the other)."""
    return (per * n * chunk, chunk, n * chunk, 1, chunk)


def forward(x, w, chunk, alpha, tile=None):
    """celu_layer's computation (tile: see _run)."""
    nb, n, k = x.shape
    m = w.size(1)
    per = m // chunk
    out = torch.empty(nb * per, n, chunk, device=x.device, dtype=torch.float32)
    _run(w, x, x, out, m, n, k, _atom_major(n, k), _by_member(per, n, chunk), alpha, True,
         False, tile)
    return out


def backward(g, h, w_t, alpha, tile=None):
    """celu_layer_backward's computation (tile: see _run)."""
    nb, k, m = w_t.shape
    n, chunk = h.size(1), h.size(2)
    per = m // chunk
    out = torch.empty(nb, n, k, device=h.device, dtype=torch.float32)
    _run(w_t, g, h, out, k, n, m, _by_member(per, n, chunk), _atom_major(n, k), alpha, False,
         True, tile)
    return out


@triton_op("mlffmd::celu_layer", mutates_args=())
def celu_layer(x: torch.Tensor, w: torch.Tensor, chunk: int, alpha: float) -> torch.Tensor:
    """celu(x w^T): x [B, N, K] (atom-major), w [B, M, K] (M = members x
    chunk, chunk = M for one member) -> [B x M / chunk, N, chunk]."""
    return forward(x, w, chunk, alpha)


@triton_op("mlffmd::celu_layer_backward", mutates_args=())
def celu_layer_backward(g: torch.Tensor, h: torch.Tensor, w_t: torch.Tensor,
                        alpha: float) -> torch.Tensor:
    """dX of celu_layer: g, h [B x M / chunk, N, chunk] (contiguous), w_t
    [B, K, M] (w transposed, contiguous) -> [B, N, K]."""
    return backward(g, h, w_t, alpha)


def _setup(ctx, inputs, output):
    x, w, chunk, alpha = inputs
    ctx.save_for_backward(w, output)
    ctx.alpha = alpha


def _grad(ctx, g):
    w, h = ctx.saved_tensors
    dx = celu_layer_backward(g.contiguous(), h, w.transpose(1, 2).contiguous(), ctx.alpha)
    return dx, None, None, None


celu_layer.register_autograd(_grad, setup_context=_setup)


def networks(model, aev, rows, n_groups, k, w1, ws):
    """export_ani_nl.ANINeighbourList._networks with these kernels: the
    members' outputs [groups x members, k] of the AEV rows `rows` (groups
    of k atoms), w1 [groups, members x hidden, inputs] and ws the gathered
    later layers [groups x members, out, in] (the last with one row)."""
    x = aev.index_select(0, rows).view(n_groups, k, model.n_in)
    h = celu_layer(x, w1, model.h_first, model.celu_alpha)  # [groups x members, k, hidden]
    for w in ws[:-1]:
        h = celu_layer(h, w, w.size(1), model.celu_alpha)
    return (h * ws[-1]).sum(2)  # [groups x members, k]
