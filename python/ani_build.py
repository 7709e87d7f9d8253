"""Build-time helpers shared by the ANI re-implementations (export_ani_static.py,
export_ani_nl.py, export_ani2xt.py): read torchani's ANI-1x / ANI-1ccx model
(or, through pack(), any torchani AEV computer and ensemble, e.g. ANI-2xt) and
pack its constants and networks for the batched-matmul ensembles.

The scripted classes live in the export scripts; of this module only
group_size() is compiled into them (their prepare()).

    parts = extract(name)   # name in export_ani.MODELS ("ani1x", "ani1ccx")

returns a dict:
    ani            torchani's model (export_ani.load_torchani)
    spec           export_ani.MODELS[name]
    symbols        ["H", "C", "N", "O"]
    numbers        [1, 6, 7, 8]
    aev, rad, angm torchani's AEV computer and its radial / angular terms
    consts         AEV constants (shifts, eta, zeta, cutoffs, triu_index,
                   n_pairs, n_members, n_feat, celu_alpha)
    w_first        [species, members * H1, n_in] first layers, transposed,
                   AEV rows permuted to the order [radial f, c | angular
                   (a, z), q], 0.25 / 2 folded in, bias in column n_feat
    layers         [species, members, out, in] later layers (bias in the
                   column of the previous layer's constant-one unit)
    padded         padded hidden widths
    dims           per-species layer widths (metadata)
    sae            self-atomic energies (Hartree, float64) from sae_linfit.dat

The packing is described in export_ani_static.py (ANIStatic). Every stored
value is a NeuroChem float32 value, or one multiplied by a power of two in
float64 and rounded (exact).
"""

from typing import List

import torch

import export_ani


def group_size(n_of: List[int], group_cost: int) -> int:
    """The group size K that minimises rows + group_cost * groups, where the n_of[c]
    atoms (or slots) of species c fill ceil(n_of[c] / K) groups of K rows; the
    smallest such K (the max of n_of when all are 0). Evaluated for every K
    at once: a loop over K in TorchScript's interpreter took ~50 ms at
    100,000 atoms on a CPU, and prepare() runs at every change of a batch's
    composition (a screen refills its batch every few force calls)."""
    big = max(n_of)
    if big < 1:
        return big
    kc = torch.arange(1, big + 1, dtype=torch.long)
    groups = torch.div(torch.tensor(n_of, dtype=torch.long).view(-1, 1) + kc - 1, kc,
                       rounding_mode="floor").sum(0)
    cost = groups * kc + group_cost * groups
    return int(torch.argmin(cost)) + 1  # argmin: the first (smallest K) of equal costs


def round4(n: int) -> int:
    return (n + 3) // 4 * 4


def check_celu(act) -> float:
    """The activation must be torchani's TightCELU or torch's CELU(alpha=0.1) (the
    one Auto3D's ANI-2xt uses); returns alpha, verified numerically."""
    from torchani.nn._core import TightCELU

    if type(act) is not TightCELU and not (
            type(act) is torch.nn.CELU and act.alpha == 0.1):
        raise SystemExit(f"unsupported activation {act!r}")
    alpha = 0.1
    x = torch.linspace(-3, 3, 601)
    if not torch.equal(act(x), torch.nn.functional.celu(x, alpha=alpha)):
        raise SystemExit("TightCELU is not CELU(alpha=0.1)")
    return alpha


def extract(name: str) -> dict:
    """torchani's `name` model, checked and packed (see the module docstring)."""
    spec = export_ani.MODELS[name]
    ani = export_ani.load_torchani(name)
    symbols = list(ani.symbols)
    if symbols != ["H", "C", "N", "O"]:
        raise SystemExit(f"{name}: unexpected species order {symbols}")
    numbers = [int(z) for z in ani.atomic_numbers.tolist()]
    nnp = ani.potentials["nnp"]
    aev, ens = nnp.aev_computer, nnp.neural_networks
    parts = pack(name, aev, list(ens.members), symbols, 8)

    sae = export_ani.read_sae(spec["resource"], symbols)
    sae_model = ani.energy_shifter.self_energies.double().tolist()
    if max(abs(a - b) for a, b in zip(sae, sae_model)) > 1e-5:
        raise SystemExit(f"{name}: SAE mismatch {sae} vs {sae_model}")
    parts.update({"ani": ani, "spec": spec, "numbers": numbers, "sae": sae})
    return parts


def pack(name: str, aev, members: list, symbols: List[str], expect_members: int) -> dict:
    """Check and pack a torchani AEV computer and an ensemble (members: torchani
    ANINetworks, each with .atomics[symbol] AtomicNetworks) for the batched-matmul
    models: the keys symbols, aev, rad, angm, consts, w_first, layers, padded and
    dims of extract()'s dict. Used by extract() (ANI-1x, ANI-1ccx: 8 members)
    and python/export_ani2xt.py (ANI-2xt: 1 member, 7 species)."""
    from torchani.aev._terms import ANIAngular, ANIRadial
    from torchani.cutoffs import CutoffCosine

    rad, angm = aev.radial, aev.angular
    if type(rad) is not ANIRadial or type(angm) is not ANIAngular:
        raise SystemExit(f"{name}: unsupported AEV terms {type(rad)}, {type(angm)}")
    if type(rad.cutoff_fn) is not CutoffCosine or type(angm.cutoff_fn) is not CutoffCosine:
        raise SystemExit(f"{name}: only the cosine cutoff is implemented")
    ns = aev.num_species
    n_pairs = aev.num_species_pairs
    if ns != len(symbols):
        raise SystemExit(f"{name}: AEV has {ns} species")
    n_members = len(members)
    if n_members != expect_members:
        raise SystemExit(
            f"{name}: ensemble has {n_members} networks, expected {expect_members}")
    n_r = rad.shifts.numel()
    n_sa, n_sz = angm.shifts.numel(), angm.sections.numel()
    n_ang = n_sa * n_sz
    if rad.num_feats != n_r or angm.num_feats != n_ang:
        raise SystemExit(f"{name}: unexpected AEV feature counts")
    if aev.radial_len != ns * n_r or aev.angular_len != n_pairs * n_ang:
        raise SystemExit(f"{name}: unexpected AEV layout")
    n_feat = aev.out_dim
    triu_index = aev.triu_index.clone().long()
    consts = {
        "triu_index": triu_index,
        "n_pairs": n_pairs,
        "shf_r": rad.shifts.detach().clone().float(),
        "shf_a": angm.shifts.detach().clone().float(),
        "shf_z": angm.sections.detach().clone().float(),
        "eta_r": float(rad.eta.item()),
        "eta_a": float(angm.eta.item()),
        "zeta": float(angm.zeta.item()),
        "rc_r": float(rad.cutoff),
        "rc_a": float(angm.cutoff),
        "n_members": n_members,
    }
    for key in ("eta_r", "eta_a", "zeta"):
        # the float attribute must reproduce the float32 buffer exactly
        if float(torch.tensor(consts[key], dtype=torch.float32)) != consts[key]:
            raise SystemExit(f"{name}: {key} {consts[key]} is not a float32 value")

    # Feature order of the AEV assembled here -> torchani's index, and the
    # power-of-two factor folded into the first-layer weights.
    #   radial  here f * ns + c          torchani c * n_r + f          x 0.25
    #   angular here (a * n_sz + z) * n_pairs + q
    #           torchani q * n_ang + a * n_sz + z                       x 2
    perm, scale = [], []
    for f in range(n_r):
        for c in range(ns):
            perm.append(c * n_r + f)
            scale.append(0.25)
    for az in range(n_ang):
        for q in range(n_pairs):
            perm.append(ns * n_r + q * n_ang + az)
            scale.append(2.0)
    assert sorted(perm) == list(range(n_feat))
    perm_t = torch.tensor(perm)
    scale_t = torch.tensor(scale, dtype=torch.float64)

    # Networks: [species][member] -> list of Linear; read shapes and activation.
    alpha = None
    nets = []  # nets[c][m] = [Linear, ...]
    for c, sym in enumerate(symbols):
        per_member = []
        for mem in members:
            net = mem.atomics[sym]
            a = check_celu(net.activation)
            alpha = a if alpha is None else alpha
            lins = list(net.layers) + [net.final_layer]
            if any(type(lin) is not torch.nn.Linear or lin.bias is None for lin in lins):
                raise SystemExit(f"{name}: unexpected layer types in {sym}")
            per_member.append(lins)
        nets.append(per_member)
    depth = len(nets[0][0])
    if any(len(lins) != depth for per in nets for lins in per):
        raise SystemExit(f"{name}: networks of different depth")
    if any(lins[0].in_features != n_feat for per in nets for lins in per):
        raise SystemExit(f"{name}: first layer does not take the {n_feat}-long AEV")
    if any(lins[-1].out_features != 1 for per in nets for lins in per):
        raise SystemExit(f"{name}: networks must output one value")
    # Widest output of each hidden layer over species; one more unit carries
    # the constant 1 (bias of the next layer); widths rounded up to a
    # multiple of 4 (aligned rows).
    widths = [max(lins[layer].out_features for per in nets for lins in per)
              for layer in range(depth - 1)]
    unit = widths  # index of each hidden layer's constant-one unit
    padded = [round4(w + 1) for w in widths]
    n_in = round4(n_feat + 1)  # AEV, constant 1 at index n_feat, padding
    h1 = padded[0]
    w_first = torch.zeros(ns, n_members * h1, n_in)
    layers: List[torch.Tensor] = []
    for layer in range(1, depth):
        w_out = padded[layer] if layer < depth - 1 else 1
        layers.append(torch.zeros(ns, n_members, w_out, padded[layer - 1]))
    with torch.no_grad():
        for c in range(ns):
            for mi in range(n_members):
                lins = nets[c][mi]
                w = lins[0].weight.detach().double()  # [out, in]
                o = w.shape[0]
                rows = slice(mi * h1, mi * h1 + o)
                # float64 product, then rounded: exact for these powers of two
                w_first[c, rows, :n_feat] = (w[:, perm_t] * scale_t).float()
                w_first[c, rows, n_feat] = lins[0].bias.detach().float()
                w_first[c, mi * h1 + unit[0], n_feat] = 1.0
                for layer in range(1, depth):
                    lw = lins[layer].weight.detach().float()
                    o, i = lw.shape
                    wl = layers[layer - 1]
                    wl[c, mi, :o, :i] = lw
                    wl[c, mi, :o, unit[layer - 1]] = lins[layer].bias.detach().float()
                    if layer < depth - 1:
                        wl[c, mi, unit[layer], unit[layer - 1]] = 1.0
    consts["n_feat"] = n_feat
    consts["celu_alpha"] = alpha

    dims = {s: [lin.out_features for lin in nets[c][0]] for c, s in enumerate(symbols)}
    return {"symbols": symbols, "aev": aev, "rad": rad, "angm": angm, "consts": consts,
            "w_first": w_first, "layers": layers, "padded": padded, "dims": dims}
