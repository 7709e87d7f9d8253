"""Small molecules with F, S and Cl for the ANI-2xt checks: systems/ani2xt/.

    .venv/bin/python -m pip install rdkit   # (`make systems` installs it too)
    .venv/bin/python python/build_ani2xt_systems.py

Same recipe as python/build_systems.py: SMILES -> RDKit ETKDGv3 embedding
(randomSeed 20261126) -> MMFF94 minimisation in vacuum; writes <name>.pdb and
<name>.xyz per molecule and index.json. Neutral, one frame, no cell. Kept out
of systems/molecules/ because the ANI-1x models (H, C, N, O) are checked on
every file there.
"""

import json
import os

import numpy as np
import rdkit
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolDescriptors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "systems", "ani2xt")
SEED = 20261126
ELEMENTS = {"H", "C", "N", "O", "F", "S", "Cl"}

MOLECULES = [
    # name, SMILES
    ("trifluoroethanol", "OCC(F)(F)F"),
    ("methanethiol", "CS"),
    ("chlorobenzene", "Clc1ccccc1"),
    # N-acetyl-L-methionine N'-methylamide (Ace-Met-NMe)
    ("methionine_dipeptide", "CC(=O)N[C@@H](CCSC)C(=O)NC"),
    # 2-chloro-4-fluorobenzenesulfonamide: F, S and Cl in one molecule
    ("chlorofluorobenzenesulfonamide", "NS(=O)(=O)c1ccc(F)cc1Cl"),
]


def build(name: str, smiles: str) -> dict:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = SEED
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"embedding {smiles} failed")
    if AllChem.MMFFOptimizeMolecule(mol, maxIters=2000) != 0:
        raise RuntimeError(f"{name}: MMFF94 minimisation did not converge")
    mol.SetProp("_Name", name)
    symbols = {a.GetSymbol() for a in mol.GetAtoms()}
    if not symbols <= ELEMENTS:
        raise RuntimeError(f"{name}: elements {symbols - ELEMENTS} not in ANI-2xt")
    x = mol.GetConformer().GetPositions()
    bonded = set()
    bonds = []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        bonded.add((min(i, j), max(i, j)))
        bonds.append(float(np.linalg.norm(x[i] - x[j])))
    if min(bonds) < 0.9 or max(bonds) > 1.9:
        raise RuntimeError(f"{name}: bond lengths {min(bonds):.2f}-{max(bonds):.2f} A")
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    nonbonded = [d[i, j] for i in range(len(x)) for j in range(i + 1, len(x))
                 if (i, j) not in bonded]
    if min(nonbonded) < 0.9:
        raise RuntimeError(f"{name}: non-bonded pair at {min(nonbonded):.2f} A")
    Chem.MolToPDBFile(mol, os.path.join(OUT, f"{name}.pdb"))
    Chem.MolToXYZFile(mol, os.path.join(OUT, f"{name}.xyz"))
    formula = rdMolDescriptors.CalcMolFormula(mol)
    print(f"wrote systems/ani2xt/{name}.pdb/.xyz ({mol.GetNumAtoms()} atoms, {formula}; "
          f"bonds {min(bonds):.2f}-{max(bonds):.2f} A)")
    return {"name": name, "pdb": f"{name}.pdb", "xyz": f"{name}.xyz",
            "n_atoms": mol.GetNumAtoms(), "formula": formula, "smiles": smiles}


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    index = [build(name, smiles) for name, smiles in MOLECULES]
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump({"generator": "python/build_ani2xt_systems.py", "rdkit": rdkit.__version__,
                   "method": f"ETKDGv3 (randomSeed {SEED}) + MMFF94 minimisation",
                   "molecules": index}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
