"""Export the pretrained SevenNet-0 (11Jul2024) potential as a neighbour-list
(contract v2) model.

    python python/export_sevenn.py                  # models/sevennet_0.{pt,json}
    python python/export_sevenn.py --out DIR        # the same files into DIR
    python python/export_sevenn.py --update-hashes  # accept a new export (models/SHA256SUMS)

Like the ANI models the .pt file is a build product (git-ignored), written
byte-reproducibly (python/model_files.py) and installed only if its sha256 is
the one models/SHA256SUMS lists; models/sevennet_0.json (the metadata) is
committed.

Weights: sevenn/pretrained_potentials/SevenNet_0__11Jul2024/
checkpoint_sevennet_0.pth in the sevenn 0.13.0 wheel on PyPI (MDIL-SNU/SevenNet;
the wheel's METADATA has "License: MIT License" and the classifier "License ::
OSI Approved :: MIT License", its LICENSE is the MIT licence, "Copyright (c)
2024 Yutack Park"; nothing separate is said about the checkpoints it ships).
The wheel is fetched once with `pip download` into .cache/sevenn/
(git-ignored) and hash-checked (python/pypi_archive.py); the checkpoint is
read from it (hash-checked) and written next to it as
.cache/sevenn/checkpoint_sevennet_0.pth, the file the model is built from.

Code: the installed sevenn package (same version, 0.13.0; e3nn 0.6.0)
builds the network from the checkpoint exactly as its ASE calculator does
(SevenNetCheckpoint.build_model(), the plain e3nn backend: no cuEquivariance,
flashTP or OpenEquivariance) and, as its LAMMPS deployment
(sevenn.scripts.deploy.deploy) does, drops the force_output module, turns the
type map off (the wrapper maps atomic numbers itself), sets
is_batch_data(False) and scripts it with e3nn.util.jit.script (not frozen).
The module that sums atomic energies (reduce_total_enegy, a float32 sum over
all atoms, constant 1.0) is dropped too: the wrapper sums the per-atom
energies ('atomic_energy', the output of rescale_atomic_energy: the network's
'scaled_atomic_energy' times the per-species scale plus the per-species
shift) per structure in float64. Nothing else of the network is changed; the scripted network is
held unchanged as the submodule `net`. sevenn, e3nn and their imports
(ase, scikit-learn, pandas, ...) are needed to export, not to run the file.

The network: SevenNet-0 is a NequIP-style E(3)-equivariant message-passing
network, 5 interaction layers (lmax 2, 128x0e+64x1e+32x2e features), 8 Bessel
radial functions times an XPLOR cutoff switching from 4.5 to 5.0 A, per-species
scale and shift of the atomic energies; 89 elements; trained on MPtrj
(PBE/PBE+U, Materials Project relaxation trajectories).

Exported interface (models/README.md, "Interface v2: pairs from the engine"):
    cutoffs() -> [5.0]
    forward_pairs(atomic_numbers int64[N], batch int64[N], neighbors int64[N, K],
                  vectors float[N, K, 3], mask bool[N, K], inner_slots [], inner_masks [])
        -> energies float64[S] (eV)
    supported_elements() -> List[int]   # the 89 atomic numbers of SevenNet-0
    metadata() -> str                   # JSON, also written to models/sevennet_0.json

forward_pairs picks the edges with mask & (|v| < 5.0) (|v| of the float32
vectors, the network's dtype; boolean indexing, so it synchronises with the
host), as sevenn's edge list: edge_index = [i, neighbors[i, k]] and
edge_vec = vectors[i, k] (sevenn's edge_vec = pos[dst] - pos[src] with
src = edge_index[0] the receiving atom, the same direction as v2's vectors).
Entries that are masked or at or beyond 5.0 A are never read, so their
energy and gradient are exactly zero (SevenNet's XPLOR cutoff polynomial is
zero with zero slope at 5.0 A but not zero beyond it, so the explicit
selection is required, not just a convenience). The network only sums
messages over edges and acts per atom, so structures of a batch do not
interact (the edge list never crosses structures). There is no
prepare()/forward_pairs_prepared(): the engine runs the model eagerly (not
in a CUDA graph). sevenn's message sums are scatter_reduce on the device, not
bit-reproducible on a GPU.
"""

import json
import os
import sys
from typing import Dict, List

import torch

import export_ani
import pypi_archive
from deps import require
from model_files import ROOT

MODELS = export_ani.SEVENN_MODELS  # name -> checkpoint
CACHE = os.path.join(ROOT, ".cache", "sevenn")
WHEEL_NAME = "sevenn-0.13.0-py3-none-any.whl"
WHEEL_REQ = "sevenn==0.13.0"
WHEEL_SHA256 = "9378f7df2b75fe83274483a5f804790ae1023dd22ddeb6a48c1a03de97e22620"
CHECKPOINT_MEMBER = "sevenn/pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth"
CHECKPOINT_SHA256 = "7052cb42b7b3be42b40b97fa0d21077a48c54b5548948fc4dcf346629f813c36"
CHECKPOINT_PATH = os.path.join(CACHE, "checkpoint_sevennet_0.pth")
SEVENN_VERSION = "0.13.0"
CUTOFF = 5.0
MAX_Z = 118
# sevenn._keys.ATOMIC_ENERGY: the per-atom energy after the species-wise scale
# and shift (the literal is repeated in forward_pairs, as TorchScript needs)
ATOMIC_ENERGY_KEY = "atomic_energy"

DESCRIPTION = (
    "SevenNet-0 (11Jul2024): universal E(3)-equivariant message-passing interatomic "
    "potential (NequIP architecture, 5 interaction layers, lmax 2) for inorganic materials "
    "of 89 elements, trained on the MPtrj data set (Materials Project relaxation "
    "trajectories, PBE/PBE+U). Periodic and isolated structures through the engine's "
    "neighbour list (contract v2), 5 A cutoff; no D3 dispersion, no long-range "
    "electrostatics."
)
REFERENCE = (
    "Y. Park, J. Kim, S. Hwang, S. Han, 'Scalable Parallel Algorithm for Graph Neural "
    "Network Interatomic Potentials in Molecular Dynamics Simulations', J. Chem. Theory "
    "Comput. 20, 4857 (2024), doi:10.1021/acs.jctc.4c00190"
)
COST_SCALING = (
    "time and memory ~ E, the number of neighbour entries within 5 A (linear in N at fixed "
    "density; 28 per atom in Si diamond); each of the 5 layers runs an e3nn tensor product "
    "per edge (on one CPU thread about 45 s and 7.5 GB for energy and forces of a 999-atom "
    "water box). Masked entries and entries beyond 5 A cost only their selection."
)


class SevenNetPairs(torch.nn.Module):
    """A scripted SevenNet network (sevenn AtomGraphSequential without its
    force output and energy sum) behind interface v2."""

    def __init__(self, net: torch.jit.ScriptModule, type_map: Dict[int, int],
                 n_types: int, meta: str):
        super().__init__()
        self.net = net
        self.elements: List[int] = sorted(int(z) for z in type_map)
        self.n_types = n_types
        self.cutoff = CUTOFF
        self.meta = meta
        table = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        for z, t in type_map.items():
            table[int(z)] = int(t)
        self.register_buffer("type_of_z", table)

    @torch.jit.export
    def cutoffs(self) -> List[float]:
        return [self.cutoff]

    @torch.jit.export
    def supported_elements(self) -> List[int]:
        return self.elements

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta

    def _types(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """sevenn type index of every atom; RuntimeError naming unsupported ones."""
        z = atomic_numbers.to(torch.long)
        z_ok = (z >= 0) & (z <= 118)  # MAX_Z
        types = self.type_of_z.to(z.device)[torch.where(z_ok, z, torch.zeros_like(z))]
        bad_atoms = (types < 0) | (~z_ok)
        if bool(bad_atoms.any()):
            bad: List[int] = torch.unique(z[bad_atoms]).tolist()
            raise RuntimeError(
                "SevenNet-0 model supports atomic numbers {} only; got unsupported atomic "
                "number(s) {}".format(self.elements, bad))
        return types

    @torch.jit.export
    def forward_pairs(self, atomic_numbers: torch.Tensor, batch: torch.Tensor,
                      neighbors: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor,
                      inner_slots: List[torch.Tensor],
                      inner_masks: List[torch.Tensor]) -> torch.Tensor:
        """Energies float64[S] (eV), S = batch.max() + 1."""
        n = atomic_numbers.size(0)
        if atomic_numbers.dim() != 1 or batch.dim() != 1 or batch.size(0) != n:
            raise RuntimeError("atomic_numbers and batch must be int64[N]")
        if neighbors.dim() != 2 or neighbors.size(0) != n:
            raise RuntimeError("neighbors must be int64[N, K]")
        kk = neighbors.size(1)
        if vectors.dim() != 3 or vectors.size(0) != n or vectors.size(1) != kk \
                or vectors.size(2) != 3:
            raise RuntimeError("vectors must be float[N, K, 3]")
        if mask.dim() != 2 or mask.size(0) != n or mask.size(1) != kk:
            raise RuntimeError("mask must be bool[N, K]")
        device = vectors.device
        if n == 0:
            return torch.zeros(0, dtype=torch.float64, device=device)
        types = self._types(atomic_numbers.to(device))
        b = batch.to(device=device, dtype=torch.long)
        lim: List[int] = torch.stack([b.min(), b.max()]).tolist()
        if lim[0] < 0:
            raise RuntimeError("batch must hold structure indices >= 0")
        n_struct = lim[1] + 1
        nb = neighbors.to(device=device, dtype=torch.long)
        if n * kk > 0:
            nlim: List[int] = torch.stack([nb.min(), nb.max()]).tolist()
            if nlim[0] < 0 or nlim[1] >= n:
                raise RuntimeError("neighbors must be atom indices in [0, {})".format(n))
        vec = vectors.to(torch.float32)
        r2 = (vec * vec).sum(2)
        keep = mask.to(device=device, dtype=torch.bool) & (r2 < self.cutoff * self.cutoff)
        idx = torch.nonzero(keep)
        rows = idx[:, 0]
        cols = idx[:, 1]
        edge_index = torch.stack([rows, nb[rows, cols]])
        edge_vec = vec[rows, cols]
        data: Dict[str, torch.Tensor] = {
            "x": types,
            "edge_index": edge_index,
            "edge_vec": edge_vec,
            "num_atoms": torch.tensor([n], dtype=torch.long, device=device),
        }
        out = self.net(data)
        atomic = out["atomic_energy"].reshape(n).to(torch.float64)
        energies = torch.zeros(n_struct, dtype=torch.float64, device=device)
        energies = energies.index_add(0, b, atomic)
        # keeps the energy differentiable w.r.t. vectors even without edges
        # (isolated atoms); adds exactly 0 with a zero gradient
        return energies + (vec.sum() * 0.0).to(torch.float64)


def checkpoint_path(download: bool = True) -> str:
    """.cache/sevenn/checkpoint_sevennet_0.pth, extracted from the hash-checked
    sevenn wheel (downloaded with pip if absent, unless download=False: then a
    missing wheel raises FileNotFoundError)."""
    if os.path.isfile(CHECKPOINT_PATH) and \
            pypi_archive.file_sha256(CHECKPOINT_PATH) == CHECKPOINT_SHA256:
        return CHECKPOINT_PATH
    if download:
        wheel = pypi_archive.fetch(WHEEL_REQ, WHEEL_NAME, WHEEL_SHA256, CACHE, label="weights")
    elif pypi_archive.cached(WHEEL_NAME, WHEEL_SHA256, CACHE):
        wheel = os.path.join(CACHE, WHEEL_NAME)
    else:
        raise FileNotFoundError(
            f"{os.path.relpath(os.path.join(CACHE, WHEEL_NAME), ROOT)} missing or not sha256 "
            f"{WHEEL_SHA256} (python/export_sevenn.py downloads it)")
    data = pypi_archive.read_member(wheel, CHECKPOINT_MEMBER, CHECKPOINT_SHA256)
    tmp = CHECKPOINT_PATH + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, CHECKPOINT_PATH)
    return CHECKPOINT_PATH


def require_sevenn(script: str):
    """The sevenn package, which must be the version the wheel is."""
    sevenn = require("sevenn", script)
    require("e3nn", script)
    if sevenn.__version__ != SEVENN_VERSION:
        raise SystemExit(f"{script}: FAIL: sevenn {sevenn.__version__} installed, "
                         f"{SEVENN_VERSION} needed")
    return sevenn


def load_checkpoint(download: bool = True):
    """sevenn's SevenNetCheckpoint of the hash-checked checkpoint."""
    require_sevenn("export_sevenn")
    from sevenn.util import load_checkpoint as sevenn_load

    return sevenn_load(checkpoint_path(download))


def build_network(cp) -> torch.nn.Module:
    """The eager sevenn network as sevenn's deploy prepares it, without the
    energy sum (module docstring)."""
    model = cp.build_model(enable_cueq=False, enable_flash=False, enable_oeq=False)
    names = list(model._modules)
    reduce = model._modules.get("reduce_total_enegy")
    rescale = model._modules.get("rescale_atomic_energy")
    if reduce is None or rescale is None or rescale.key_output != ATOMIC_ENERGY_KEY \
            or reduce.key_input != ATOMIC_ENERGY_KEY or float(reduce.constant) != 1.0:
        raise SystemExit(f"{CHECKPOINT_MEMBER}: the energy is not the plain sum of "
                         f"'{ATOMIC_ENERGY_KEY}' (modules {names})")
    for key in ["force_output", "reduce_total_enegy"]:
        if key not in names:
            raise SystemExit(f"{CHECKPOINT_MEMBER}: no module {key} in {names}")
        model.delete_module_by_key(key)
    if list(model._modules)[-1] != "rescale_atomic_energy":
        raise SystemExit(f"unexpected last module {list(model._modules)[-1]}")
    model.eval_type_map = False
    if model.modal_map:
        raise SystemExit("SevenNet-0 is expected to have no modalities")
    model.set_is_batch_data(False)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def build(name: str, _torchani_version=None) -> SevenNetPairs:
    import e3nn
    import e3nn.util.jit

    sevenn = require_sevenn("export_sevenn")
    cp = load_checkpoint()
    config = cp.config
    if float(config["cutoff"]) != CUTOFF:
        raise SystemExit(f"cutoff {config['cutoff']}, expected {CUTOFF}")
    type_map = {int(z): int(t) for z, t in config["_type_map"].items()}
    n_types = int(config["_number_of_species"])
    if sorted(type_map.values()) != list(range(n_types)):
        raise SystemExit("type map is not a permutation of 0..n_types-1")
    net = build_network(cp)
    scripted = e3nn.util.jit.script(net)
    from ase.data import chemical_symbols

    elements = sorted(type_map)
    meta = {
        "name": name,
        "description": DESCRIPTION,
        "variant": "neighbour-list (contract v2)",
        "cost_scaling": COST_SCALING,
        "interface": [
            "cutoffs() -> List[float] ([5.0] Angstrom)",
            "forward_pairs(atomic_numbers int64[N], batch int64[N], neighbors int64[N,K], "
            "vectors float[N,K,3], mask bool[N,K], inner_slots [], inner_masks []) "
            "-> float64[S] eV",
            "supported_elements() -> List[int]",
            "metadata() -> str (JSON)",
        ],
        "static_path": ("none (no prepare/forward_pairs_prepared): edges are selected with "
                        "boolean indexing, so the engine runs the model eagerly"),
        "model_contract": 2,
        "cutoffs_angstrom": [CUTOFF],
        "cutoff_function": "XPLOR, switching from 4.5 to 5.0 A",
        "energy_unit": "eV",
        "length_unit": "angstrom",
        "force_unit": "eV/angstrom",
        "energy_dtype": "float64 (sum of float32 atomic energies)",
        "compute_dtype": "float32 (vectors of other floating dtypes are cast to float32)",
        "supported_elements": elements,
        "species": [chemical_symbols[z] for z in elements],
        "periodic": True,
        "level_of_theory": "PBE/PBE+U (MPtrj, Materials Project)",
        "source": (
            f"{CHECKPOINT_MEMBER} (sha256 {CHECKPOINT_SHA256}) from the sevenn "
            f"{SEVENN_VERSION} wheel on PyPI ({WHEEL_NAME}, sha256 {WHEEL_SHA256}); network "
            f"built by sevenn {sevenn.__version__} (SevenNetCheckpoint.build_model, e3nn "
            f"{e3nn.__version__} backend) as its LAMMPS deploy does, scripted with "
            f"e3nn.util.jit.script under torch {torch.__version__.split('+')[0]} and wrapped "
            "by python/export_sevenn.py (edge selection from the v2 neighbour list, float64 "
            "per-structure energy sum)"
        ),
        "licence": (
            "MIT (the sevenn wheel's METADATA License field and classifier, and its LICENSE "
            "file, 'Copyright (c) 2024 Yutack Park'; the wheel states no separate terms for "
            "the pretrained checkpoints it ships)"
        ),
        "reference": REFERENCE,
    }
    wrapper = SevenNetPairs(scripted, type_map, n_types,
                            json.dumps(meta, indent=None, sort_keys=False))
    return wrapper.eval()


def main(argv: List[str]) -> int:
    return export_ani.export_variant(argv, MODELS, build, "SevenNet model", "export_sevenn",
                                     neurochem=False, needs_torchani=False)


if __name__ == "__main__":
    # Run main() of the module imported under its own name, so the scripted
    # class is named __torch__.export_sevenn.*, not __torch__.*.
    import export_sevenn

    sys.exit(export_sevenn.main(sys.argv[1:]))
