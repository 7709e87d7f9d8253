"""The neighbour-list ANI's network layers as a hand-written Triton batched
matmul on tensor cores with three TF32 products (tl.dot input_precision
"tf32x3": each product rounded to about float32's precision, accumulated in
float32), for benches/fused_angular.py's *_gemm forms (issue 12).

Why: in the file's force call the ensemble's batched GEMMs run in float32
on the SIMT units (cuBLAS `sm80_xmma_gemm_f32f32..._ffma`; TF32 is off
because the model's 0/1 matmuls must copy values exactly): 7.8 of 16.6 ms
at alanine dipeptide x 4096 and 0.59 of 1.23 ms for chignolin x 32 in the
fused_triton_dot_row_tf32x3 form (benches/results/fused_angular_*). Only
the layers' products go through this kernel: their weights are constants
and their error budget is float32's, not exactness.

    C[b] = op(A[b]) @ B[b]      A [batch, M, K] (or [batch, K, M] with
                                transpose_a), B [batch, K, N], C float32

precision is tl.dot's input_precision: "tf32x3" (about float32's rounding,
the *_gemm forms) or "tf32" (one TF32 product, 10-bit mantissas: a speed
ceiling, not float32's accuracy; the *_gemmtf32 forms).

A is a constant (the layers' weights, no gradient); the gradient of B is
op(A)^T @ grad_C, the same kernel with A's strides swapped. One program per
(BM x BN) tile of one batch entry, float32 accumulation in a fixed order
(deterministic for a given tile; the tile is autotuned per shape among a
few configurations). Shapes and strides are compile-time (one build per
layer shape, as the model's shapes are static: Triton then knows which
dimension is contiguous and vectorises the loads; it also keeps Triton's
CPU interpreter working). Registered with torch.library.triton_op, so torch.compile
puts the kernel into its graph; TRITON_INTERPRET=1 runs it on a CPU
(uncompiled), which is how it was checked against torch.bmm here.
"""

import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from angular_triton import _launch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _bmm(a, b, c, s_ab: tl.constexpr, s_am: tl.constexpr, s_ak: tl.constexpr,
         s_bb: tl.constexpr, s_bk: tl.constexpr, s_bn: tl.constexpr,
         s_cb: tl.constexpr, s_cm: tl.constexpr, s_cn: tl.constexpr,
         M: tl.constexpr, N: tl.constexpr, K: tl.constexpr,
         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr):
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
        y = tl.load(b + pid_b * s_bb + kk[:, None] * s_bk + rn[None, :] * s_bn,
                    mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(x, y, acc, input_precision=PREC)
    tl.store(c + pid_b * s_cb + rm[:, None] * s_cm + rn[None, :] * s_cn, acc,
             mask=(rm[:, None] < M) & (rn[None, :] < N))


# Tiles (BM, BN, BK, warps, stages) tried per shape; Triton's CPU
# interpreter cannot time them, so it takes the first.
TILES = ((64, 64, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (128, 128, 32, 8, 3),
         (128, 128, 16, 8, 4))
if INTERPRETED:
    _tuned = _bmm
    FIXED_TILE = dict(zip(("BM", "BN", "BK"), TILES[0][:3]))
else:
    _tuned = triton.autotune(
        configs=[triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=st)
                 for bm, bn, bk, w, st in TILES],
        key=["M", "N", "K", "s_am", "s_bk", "PREC"])(_bmm)
    FIXED_TILE = {}


@triton_op("mlffbench::layer_bmm", mutates_args=())
def layer_bmm(a: torch.Tensor, b: torch.Tensor, transpose_a: bool,
              precision: str) -> torch.Tensor:
    nb, k, n = b.shape
    m = a.size(2) if transpose_a else a.size(1)
    s_ab, s_am, s_ak = a.stride(0), a.stride(1), a.stride(2)
    if transpose_a:
        s_am, s_ak = s_ak, s_am
    out = torch.empty(nb, m, n, device=b.device, dtype=torch.float32)
    def grid(meta):
        return (triton.cdiv(m, meta["BM"]), triton.cdiv(n, meta["BN"]), nb)
    _launch(_tuned)[grid](a, b, out, s_ab, s_am, s_ak,
                          b.stride(0), b.stride(1), b.stride(2),
                          out.stride(0), out.stride(1), out.stride(2),
                          M=m, N=n, K=k, PREC=precision, **FIXED_TILE)
    return out


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.transpose_a, ctx.precision = inputs[2], inputs[3]


def _grad(ctx, g):
    (a,) = ctx.saved_tensors
    return None, layer_bmm(a, g.contiguous(), not ctx.transpose_a, ctx.precision), None, None


layer_bmm.register_autograd(_grad, setup_context=_setup)


class NetworkGemms(torch.overrides.TorchFunctionMode):
    """Inside this mode, torch.bmm(A, B) with a constant A (no gradient) and
    a B that needs one, which in the neighbour-list ANI is exactly its
    network layers (the AEV's matmuls all take the positions' gradient in
    their first operand or in neither), runs as layer_bmm with `precision`."""

    def __init__(self, precision):
        super().__init__()
        self.precision = precision

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is torch.bmm and not kwargs and not args[0].requires_grad
                and args[1].requires_grad):
            return layer_bmm(args[0], args[1], False, self.precision)
        return func(*args, **kwargs)
