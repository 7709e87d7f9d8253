"""Export ANI-2xt (H, C, N, O, F, S, Cl) as a neighbour-list model (contract v2).

    python python/export_ani2xt.py                  # models/ani2xt_nl.{pt,json}
    python python/export_ani2xt.py --out DIR        # the same files into DIR
    python python/export_ani2xt.py --update-hashes  # accept a new export (models/SHA256SUMS)

python/export_ani.py (`make ani-models`) runs this script too, with the same
options. Like the other ANI models the .pt file is a build product
(git-ignored), written byte-reproducibly (python/model_files.py) and installed
only if its sha256 is the one models/SHA256SUMS lists.

Weights: the ANI-2xt network of the Auto3D package (isayevlab/Auto3D_pkg, MIT
licence), Auto3D/models/ani2xt_no_repulsion.pt in the Auto3D 2.3.1 wheel on
PyPI: a state dict of torchani's legacy ANIModel, one network per element
(no ensemble; H 256-192-160, C 224-192-160, N and O 192-160-128, F, S and Cl
160-128-96), CELU(0.1). This script fetches the wheel once with `pip
download` into .cache/auto3d/ (git-ignored; python/auto3d_wheel.py, shared with
python/export_aimnet2.py), checks its sha256 and the state
dict's, and reads the state dict from the wheel (no Auto3D install, no
import of Auto3D's code). The rest of the model is copied from Auto3D's
Auto3D/batch_opt/ANI2xt_no_rep.py (class ANI2xt), which builds it as:

  torchani.AEVComputer(Rcr=5.2, Rca=3.5, EtaR=[16], ShfR=16 shifts 0.9..4.93125,
                       EtaA=[8], Zeta=[32], ShfA=[0.9, 1.55, 2.2, 2.85],
                       ShfZ=8 sections pi/16..15 pi/16, num_species=7)
  species order H, C, N, O, F, S, Cl (atomic numbers 1, 6, 7, 8, 9, 16, 17)
  self energies (Hartree, float64) -0.5984, -38.0826, -54.7031, -75.1901,
                                   -99.8006, -398.1224, -460.1387
  energy (eV) = (sum of atomic networks + sum of self energies) * 27.211386245988

reference_model() rebuilds exactly that with torchani 2.9 (AEVComputer.from_constants,
ANINetworks of AtomicNetworks with torch.nn.CELU(0.1), the legacy state dict
loaded by ANINetworks' compatibility loader); python/check_ani.py compares the
exported model with it.

The exported model is python/export_ani_nl.py's ANINeighbourList (same code,
same entry points: cutoffs() -> [5.2, 3.5], forward_pairs, prepare,
forward_pairs_prepared, is_prepared, supported_elements() -> [1, 6, 7, 8, 9,
16, 17], metadata()), built by ani_build.pack() from the 7-species AEV (16
radial shifts x 7 species + 32 angular terms x 28 species pairs = 1008
features) and the one-member "ensemble". A subclass only replaces the
unsupported-element message (the base class names H, C, N, O) by checking
the composition first in prepare() and forward_pairs().
"""

import io
import json
import os
import sys
from typing import List

import torch

import ani_build
import export_ani
import export_ani_nl
import model_files
from auto3d_wheel import WHEEL_NAME, WHEEL_SHA256, read_member
from export_ani import HARTREE_TO_EV

WEIGHTS_MEMBER = "Auto3D/models/ani2xt_no_repulsion.pt"
WEIGHTS_SHA256 = "542e353061ad5ad1370206421008f2ecbf069b8690970656109d63b281b6cbaa"

MODELS = export_ani.ANI2XT_MODELS  # {"ani2xt_nl": "ani2xt"}

# Auto3D/batch_opt/ANI2xt_no_rep.py (Auto3D 2.3.1), copied verbatim
RCR = 5.2000e+00
RCA = 3.5000e+00
ETA_R = [1.6000000e+01]
SHF_R = [9.0000000e-01, 1.1687500e+00, 1.4375000e+00, 1.7062500e+00, 1.9750000e+00,
         2.2437500e+00, 2.5125000e+00, 2.7812500e+00, 3.0500000e+00, 3.3187500e+00,
         3.5875000e+00, 3.8562500e+00, 4.1250000e+00, 4.3937500e+00, 4.6625000e+00,
         4.9312500e+00]
ZETA = [3.2000000e+01]
SHF_Z = [1.9634954e-01, 5.8904862e-01, 9.8174770e-01, 1.3744468e+00, 1.7671459e+00,
         2.1598449e+00, 2.5525440e+00, 2.9452431e+00]
ETA_A = [8.0000000e+00]
SHF_A = [9.0000000e-01, 1.5500000e+00, 2.2000000e+00, 2.8500000e+00]
SPECIES = ["H", "C", "N", "O", "F", "S", "Cl"]
NUMBERS = [1, 6, 7, 8, 9, 16, 17]
# hidden widths per species (input 1008, output 1), as ANI2xt_no_rep.py
WIDTHS = {"H": [256, 192, 160], "C": [224, 192, 160], "N": [192, 160, 128],
          "O": [192, 160, 128], "F": [160, 128, 96], "S": [160, 128, 96],
          "Cl": [160, 128, 96]}
SELF_ENERGIES = [-0.5984, -38.0826, -54.7031, -75.1901, -99.8006, -398.1224, -460.1387]
AUTO3D_HARTREE_TO_EV = 27.211386245988  # Auto3D/utils.py hartree2ev

DESCRIPTION = (
    "ANI-2xt: single-network ANI potential for neutral organic molecules containing "
    "H, C, N, O, F, S, Cl (ANI-2x elements and AEV), the 'no repulsion' model Auto3D "
    "uses to optimise and rank conformers; no ensemble (one network per element)."
)
REFERENCE = (
    "Z. Liu, T. Zubatiuk, A. Roitberg, O. Isayev, 'Auto3D: Automatic Generation of the "
    "Low-Energy 3D Structures with ANI Neural Network Potentials', J. Chem. Inf. Model. "
    "62, 5373 (2022), doi:10.1021/acs.jcim.2c00817; ANI-2x: C. Devereux et al., J. Chem. "
    "Theory Comput. 16, 4192 (2020), doi:10.1021/acs.jctc.0c00121"
)
COST_SCALING = (
    "time and memory ~ N * (16 K + 112 Ka (Ka - 1) / 2) for N atoms, K neighbour entries "
    "per row (within 5.2 A) and Ka inner slots (within 3.5 A): linear in N at fixed "
    "density; every slot pair of every row is computed, used or not, so keep Ka close to "
    "the largest row. One network per atom (no ensemble)."
)


class ANI2xtNeighbourList(export_ani_nl.ANINeighbourList):
    """export_ani_nl.ANINeighbourList with an element check naming ANI-2xt's
    elements; prepare() and forward_pairs() as the base class otherwise."""

    def _check_elements(self, atomic_numbers: torch.Tensor) -> None:
        z = atomic_numbers.to(device=torch.device("cpu"), dtype=torch.long)
        z_ok = (z >= 0) & (z <= 118)
        species = self.species_index.to(torch.device("cpu"))[
            torch.where(z_ok, z, torch.zeros_like(z))]
        bad_atoms = (species < 0) | (~z_ok)
        if bool(bad_atoms.any()):
            bad: List[int] = torch.unique(z[bad_atoms]).tolist()
            raise RuntimeError(
                "ANI-2xt model supports only H, C, N, O, F, S, Cl (atomic numbers {}); got "
                "unsupported atomic number(s) {}".format(self.elements, bad))

    @torch.jit.export
    def prepare(self, atomic_numbers: torch.Tensor, batch: torch.Tensor) -> None:
        """Validate the composition and store its layout (once per composition)."""
        self.prepared = False
        self._check_elements(atomic_numbers)
        lay = self._layout(atomic_numbers, batch)
        pair_e, pair_pq = self._pair_tables(self.table_slots, atomic_numbers.device)
        self.p_n_atoms = lay[0]
        self.p_n_struct = lay[1]
        self.p_n_groups = lay[2]
        self.p_group_size = lay[3]
        self.p_atom_table = lay[4]
        self.p_rows = lay[5]
        self.p_slot_rows = lay[6]
        self.p_slot_w = lay[7]
        self.p_sae_ev = lay[8]
        self.p_ones = lay[9]
        self.p_w1 = lay[10]
        self.p_ws = lay[11]
        self.p_pair_e = pair_e
        self.p_pair_pq = pair_pq
        self.prepared = True

    @torch.jit.export
    def forward_pairs(self, atomic_numbers: torch.Tensor, batch: torch.Tensor,
                      neighbors: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                      inner_slots: List[torch.Tensor],
                      inner_masks: List[torch.Tensor]) -> torch.Tensor:
        """Energies (float64, eV); validates everything and leaves the prepared
        state alone."""
        n = atomic_numbers.size(0)
        nb, slots, slot_mask = self._check_pairs(n, neighbors, vectors, mask, inner_slots,
                                                 inner_masks)
        if atomic_numbers.dim() == 1 and n > 0:
            self._check_elements(atomic_numbers)
        lay = self._layout(atomic_numbers.to(vectors.device), batch.to(vectors.device))
        kk = nb.size(1)
        ka = slots.size(1)
        if n * kk > 0:
            lim: List[int] = torch.stack([nb.min(), nb.max()]).tolist()
            if lim[0] < 0 or lim[1] >= n:
                raise RuntimeError("neighbors must be atom indices in [0, {})".format(n))
        if n * ka > 0:
            lim2: List[int] = torch.stack([slots.min(), slots.max()]).tolist()
            if lim2[0] < 0 or lim2[1] >= max(kk, 1):
                raise RuntimeError("inner_slots must be entry indices in [0, {})".format(kk))
        pair_e, pair_pq = self._pair_tables(ka, vectors.device)
        return self._energies(nb, vectors, mask, slots, slot_mask, lay[1], lay[2], lay[3],
                              lay[4], lay[5], lay[6], lay[7], lay[8], lay[9], lay[10],
                              lay[11], pair_e, pair_pq)


# --------------------------------------------------------------------------
# weights: Auto3D wheel -> state dict
# --------------------------------------------------------------------------


def state_dict(download: bool = True) -> dict:
    """Auto3D's ANI-2xt state dict, read from the wheel (weights_only load).
    download=False (python/check_ani.py): a missing wheel raises instead."""
    data = read_member(WEIGHTS_MEMBER, WEIGHTS_SHA256, download)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def reference_model(download: bool = True):
    """ANI-2xt built as Auto3D builds it, with torchani 2.9:
    (aev_computer, networks, self_energies float64 [7] Hartree)."""
    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    from torchani.aev import AEVComputer
    from torchani.nn import ANINetworks, AtomicNetwork

    aev = AEVComputer.from_constants(
        RCR, RCA, ETA_R[0], SHF_R, ETA_A[0], ZETA[0], SHF_A, SHF_Z, len(SPECIES),
        strategy="pyaev", cutoff_fn="cosine")
    n_feat = aev.out_dim
    nets = ANINetworks({s: AtomicNetwork([n_feat] + WIDTHS[s] + [1],
                                         activation=torch.nn.CELU(0.1), bias=True)
                        for s in SPECIES})
    # Auto3D's legacy ANIModel keys "<species index>.<Sequential index>.<weight|bias>"
    # (Linear layers at 0, 2, 4, 6) -> ANINetworks' "atomics.<symbol>.layers.<i>" /
    # "atomics.<symbol>.final_layer"
    sd = {}
    for key, value in state_dict(download).items():
        c, layer, kind = key.split(".")
        layer = int(layer)
        where = "final_layer" if layer == 6 else f"layers.{layer // 2}"
        sd[f"atomics.{SPECIES[int(c)]}.{where}.{kind}"] = value
    nets.load_state_dict(sd, strict=True)
    loaded = nets.state_dict()
    if sorted(loaded) != sorted(sd) or any(not torch.equal(loaded[k], sd[k]) for k in sd):
        raise SystemExit("ANI-2xt state dict did not load one-to-one into ANINetworks")
    sae = torch.tensor(SELF_ENERGIES, dtype=torch.float64)
    return aev.eval(), nets.eval(), sae


class Reference(torch.nn.Module):
    """Auto3D's ANI2xt.forward: species indices [B, N] (-1 padding), coords
    [B, N, 3] -> energies [B] in eV (float64), optionally cell / pbc."""

    def __init__(self, aev, nets, sae):
        super().__init__()
        self.aev, self.nets = aev, nets
        self.register_buffer("sae", sae)

    def forward(self, species, coords, cell=None, pbc=None):
        aevs = self.aev(species, coords, cell=cell, pbc=pbc)
        e_nn = self.nets(species, aevs)
        e_sae = torch.where(species >= 0, self.sae[species.clamp(min=0)],
                            torch.zeros((), dtype=torch.float64)).sum(1)
        return (e_nn.double() + e_sae) * AUTO3D_HARTREE_TO_EV


# --------------------------------------------------------------------------
# build and export
# --------------------------------------------------------------------------


def build_nl(nl_name: str, torchani_version: str) -> ANI2xtNeighbourList:
    aev, nets, sae = reference_model()
    parts = ani_build.pack("ani2xt", aev, [nets], SPECIES, 1)
    rad, angm = parts["rad"], parts["angm"]
    consts = parts["consts"]
    if AUTO3D_HARTREE_TO_EV != HARTREE_TO_EV:
        raise SystemExit("Auto3D's hartree2ev differs from export_ani.HARTREE_TO_EV")
    cutoffs = [float(rad.cutoff), float(angm.cutoff)]
    meta = {
        "name": nl_name,
        "description": DESCRIPTION + (
            " Trained on gas-phase molecules; periodic boundaries through the engine's "
            "neighbour list (contract v2); no long-range electrostatics or dispersion "
            "beyond the 5.2 A radial / 3.5 A angular AEV cutoffs."),
        "variant": "neighbour-list (contract v2)",
        "neighbour_list_note": export_ani_nl.NL_NOTE,
        "cost_scaling": COST_SCALING,
        "interface": [
            "cutoffs() -> List[float] (Angstrom: [radial, angular])",
            "forward_pairs(atomic_numbers int64[N], batch int64[N], neighbors int64[N,K], "
            "vectors float[N,K,3], mask bool[N,K], inner_slots [int64[N,Ka]], "
            "inner_masks [bool[N,Ka]]) -> float64[S] eV",
            "prepare(atomic_numbers int64[N], batch int64[N]) -> None",
            "forward_pairs_prepared(neighbors, vectors, mask, inner_slots, inner_masks) "
            "-> float64[S] eV (no host syncs)",
            "is_prepared() -> bool",
        ],
        "model_contract": 2,
        "cutoffs_angstrom": cutoffs,
        "energy_unit": "eV",
        "length_unit": "angstrom",
        "energy_dtype": "float64",
        "compute_dtype": "float32 (vectors of other floating dtypes are cast to float32)",
        "supported_elements": NUMBERS,
        "species_order": SPECIES,
        "ensemble_size": consts["n_members"],
        "network_widths": parts["dims"],
        "padded_network_widths": parts["padded"],
        "radial_cutoff_angstrom": cutoffs[0],
        "angular_cutoff_angstrom": cutoffs[1],
        "periodic": True,
        "hartree_to_ev": HARTREE_TO_EV,
        "self_energies_hartree": SELF_ENERGIES,
        "level_of_theory": ("not stated in the Auto3D wheel; see the Auto3D paper (ANI-2x "
                            "family: wB97X/6-31G(d) training data)"),
        "source": (
            f"{WEIGHTS_MEMBER} (sha256 {WEIGHTS_SHA256}) from the Auto3D 2.3.1 wheel "
            f"on PyPI ({WHEEL_NAME}, sha256 {WHEEL_SHA256}); AEV constants, species order, "
            "network shapes and self energies from Auto3D/batch_opt/ANI2xt_no_rep.py; "
            f"loaded with torchani {torchani_version} (pyaev strategy) and re-implemented "
            "on the engine's neighbour list by python/export_ani2xt.py"
        ),
        "licence": "MIT (Auto3D, Copyright (c) 2022 Isayev Lab @ Carnegie Mellon)",
        "reference": REFERENCE,
    }
    model = ANI2xtNeighbourList(consts, export_ani_nl.nl_first_layer(parts),
                                parts["layers"], NUMBERS, list(map(float, sae.tolist())),
                                json.dumps(meta, indent=None, sort_keys=False))
    return model.eval()


def main(argv: List[str]) -> int:
    return export_ani.export_variant(argv, MODELS, build_nl, "ANI-2xt model", "export_ani2xt", neurochem=False)


if __name__ == "__main__":
    # Run main() of the module imported under its own name, so the scripted
    # classes are named __torch__.export_ani2xt.*, not __torch__.*.
    import export_ani2xt

    sys.exit(export_ani2xt.main(sys.argv[1:]))
