"""The neighbour-list ANI (python/export_ani_nl.py) with its angular sum by
Triton kernels (python/angular_triton.py), rebuilt in Python from a
scripted model file's weights and constants: what `mlff-md compile
--kernels triton` compiles into a package (python/export_pt2.py --kernels).

Why: the file's angular AEV scatters each slot pair's radial factors into
the column of its species pair, u [N, T, 10, 4], and sums over the pairs
with one batched GEMV; that tensor and its backward are the largest part
of the force call after the networks. The kernels sum the pairs' 32
products straight into their species pair (forward) and gather them back
(backward). On an H100 the force call took 1.41 ms (exact copies) or
1.24 ms (tensor cores, three TF32 products) against the file's 2.02 for
chignolin x 32 (benches/results/fused_angular_NVIDIA-H100_2026-12-05).

Kernels (KERNELS, the name `--kernels` takes -> angular_triton variant,
and whether the networks are python/network_triton.py's):
  triton         dot_row: each pair's values selected by a 0/1 product in
                 full float32 (exact copies; only the summation order
                 differs from the file's)
  triton-tf32x3  dot_row_tf32x3: the same on tensor cores with three TF32
                 products (each value rounded to about float32's precision)
  triton-nets    dot_row, and the networks' layers by network_triton's
                 kernels (tensor cores, three TF32 products, atom-major
                 activations, CELU inside): 1.27x faster than `triton` at
                 alanine dipeptide x 4096, 1.17x for chignolin x 32 (force
                 call, H100, benches/results/pt2_nets_NVIDIA-H100_2026-12-06)

Everything else (radial terms, the per-pair factors of _angular_factors,
and the networks unless named) is the file's own code, so a rebuilt module
run eagerly gives the file's energies to float32 summation order and
rounding (export_pt2.py checks that before compiling), and its backward is
as deterministic as the file's.
"""

import torch

import angular_triton
import export_ani_nl
import network_triton

KERNELS = {"triton": ("dot_row", False), "triton-tf32x3": ("dot_row_tf32x3", False),
           "triton-nets": ("dot_row", True)}


class TritonAngular(export_ani_nl.ANINeighbourList):
    """ANINeighbourList with _angular's sum by angular_triton's kernels
    (`variant`: one of angular_triton.VARIANTS) and, with `nets`, its
    networks by python/network_triton.py's."""

    variant = "dot_row"
    nets = False

    def _networks(self, aev, rows, n_groups, k, w1, ws):
        if not self.nets:
            return super()._networks(aev, rows, n_groups, k, w1, ws)
        return network_triton.networks(self, aev, rows, n_groups, k, w1, ws)

    def _angular(self, v, d, ent, slots, slot_mask, pair_e, pair_pq):
        ang, rad, pair = self._angular_factors(v, d, ent, slots, slot_mask, pair_e, pair_pq)
        # the kernels read ang as [N, T, Z] (Inductor writes it so directly)
        return angular_triton.angular_sum(ang.transpose(1, 2).contiguous(), rad.contiguous(),
                                          pair.contiguous(),
                                          angular_triton.VARIANTS.index(self.variant))


def is_ani_nl(sm):
    """Whether a loaded scripted model is export_ani_nl's ANINeighbourList
    with the AEV layout the kernels take (angular_triton's Z x species
    pairs x A = 8 x 10 x 4: ANI-1x and ANI-1ccx; ANI-2xt has 28 pairs)."""
    if not all(hasattr(sm, a) for a in ("pair_index", "shf_a", "shf_z", "w_first", "eta_a",
                                        "n_members", "n_pairs", "forward_pairs_prepared")):
        return False
    return ((sm.shf_z.numel(), sm.n_pairs, sm.shf_a.numel())
            == (angular_triton.Z, angular_triton.PAIRS, angular_triton.A))


def from_script(sm, cls=TritonAngular, kernels=None):
    """The Python module `cls` (this checkout's code) of a loaded scripted
    ANINeighbourList file, with its buffers and constants, on their device;
    `kernels` (a name in KERNELS) sets TritonAngular's kernels."""
    consts = {
        "n_pairs": sm.n_pairs, "triu_index": sm.pair_index.clone(),
        "shf_r": sm.shf_r.flatten(), "shf_a": sm.shf_a.flatten(), "shf_z": sm.shf_z.flatten(),
        "n_feat": sm.n_feat, "n_members": sm.n_members, "rc_r": sm.rc[0], "rc_a": sm.rc[1],
        "eta_r": sm.eta_r, "eta_a": sm.eta_a, "zeta": sm.zeta, "celu_alpha": sm.celu_alpha,
    }
    buffers = dict(sm.named_buffers())
    layers = [buffers[f"layers.{i}.weight"].clone()
              for i in range(sum(1 for b in buffers if b.startswith("layers.")))]
    model = cls(consts, sm.w_first.clone(), layers, list(sm.elements),
                sm.self_energies.tolist(), sm.meta)
    if kernels is not None:
        model.variant, model.nets = KERNELS[kernels]
    return model.eval().to(sm.w_first.device)
