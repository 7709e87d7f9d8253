"""Times python/network_triton.py's layer kernel at alanine dipeptide x
4096's shapes (11 species groups of 8,192 atoms, 8 members), every tile of
TILES_TRIED, forward (with CELU) and backward (with CELU's derivative),
against cuBLAS float32 and TF32 on the file's feature-major layout, and
prints each product's error against float64 (issue 12): which tiles
network_triton.TILES should hold.

    PYTHONPATH=python python3 benches/network_tiles.py --out tiles.json
"""

import argparse
import json

import torch
import triton

import network_triton

TILES_TRIED = network_triton.TILES + ((64, 128, 32, 4, 3), (128, 64, 64, 4, 4),
                                      (64, 256, 32, 8, 3), (256, 64, 32, 8, 3))


def time_ms(fn, reps=20):
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=11)
    ap.add_argument("--cols", type=int, default=8192)
    ap.add_argument("--out")
    a = ap.parse_args()
    dev = torch.device("cuda")
    g, n, mem, alpha = a.groups, a.cols, 8, 0.1
    # (name, batch, members per weight row block, chunk, M, K)
    layers = [("first", g, mem, 164, mem * 164, 388), ("second", g * mem, 1, 132, 132, 164),
              ("third", g * mem, 1, 100, 100, 132)]
    rows = []
    for name, nb, per, chunk, m, k in layers:
        w = torch.randn(nb, m, k, device=dev) / k ** 0.5
        x = torch.randn(nb, n, k, device=dev)
        h = network_triton.celu_layer(x, w, chunk, alpha)
        gr = torch.randn_like(h)
        w_t = w.transpose(1, 2).contiguous()
        flop = 2.0 * nb * m * k * n
        row = {"layer": name, "batch": nb, "M": m, "K": k, "N": n}
        xf = x.transpose(1, 2).contiguous()  # the file's feature-major input
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            row["cublas_tf32" if tf32 else "cublas_fp32"] = time_ms(lambda: torch.bmm(w, xf))
        torch.backends.cuda.matmul.allow_tf32 = False
        ref_f = torch.nn.functional.celu(torch.einsum("bmk,bnk->bnm", w.double(), x.double()),
                                         alpha)
        ref_f = ref_f.view(nb, n, per, chunk).transpose(1, 2).reshape(nb * per, n, chunk)
        d = torch.where(h > 0, 1.0, h.double() / alpha + 1.0) * gr.double()
        ref_b = torch.einsum("bmk,bnm->bnk", w.double(),
                             d.view(nb, per, n, chunk).transpose(1, 2).reshape(nb, n, m))
        for tile in TILES_TRIED:
            def fwd():
                return network_triton.forward(x, w, chunk, alpha, tile)

            def bwd():
                return network_triton.backward(gr, h, w_t, alpha, tile)
            bm, bn, bk, warps, st = tile
            key = f"{bm}x{bn}x{bk}_w{warps}_s{st}"
            for part, fn, ref in (("forward", fwd, ref_f), ("backward", bwd, ref_b)):
                try:
                    row[f"{part}_{key}"] = time_ms(fn)
                except triton.runtime.errors.OutOfResources:  # shared memory
                    row[f"{part}_{key}_too_large"] = True
                    continue
                row[f"{part}_err_{key}"] = float((fn().double() - ref).abs().max()
                                                 / ref.abs().max())
        row["tflops"] = {kk: flop / v / 1e9 for kk, v in row.items()
                         if isinstance(v, float) and "err" not in kk}
        for part in ("forward", "backward"):
            times = {kk: v for kk, v in row.items() if kk.startswith(part + "_")
                     and isinstance(v, float) and "err" not in kk}
            row["best_" + part] = min(times, key=times.get)
        rows.append(row)
        print(name, {kk: round(row[row[kk]], 3) for kk in ("best_forward", "best_backward")},
              row["best_forward"], row["best_backward"],
              "cublas fp32 %.3f tf32 %.3f" % (row["cublas_fp32"], row["cublas_tf32"]),
              "max err %.1e" % max(v for kk, v in row.items() if "err" in kk), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(dev), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
