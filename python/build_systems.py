"""Build the small molecules shipped under systems/ (offline, reproducible).

    python python/build_systems.py

Geometries: RDKit from SMILES, ETKDGv3 embedding with a fixed random seed,
then MMFF94 minimisation. PDB files carry residue name MOL and CONECT
records, so VMD/MDAnalysis/mdtraj see the bonds. See systems/README.md.
"""

import os
import sys

from rdkit import Chem
from rdkit.Chem import AllChem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "systems")

MOLECULES = {
    # name: (SMILES, number of conformers)
    "caffeine": ("Cn1cnc2c1c(=O)n(C)c(=O)n2C", 1),
    "aspirin": ("CC(=O)Oc1ccccc1C(=O)O", 1),
    "ethanol": ("CCO", 3),
    "hexane": ("CCCCCC", 1),
}


def embed(smiles: str, n_conf: int) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = 20261126
    ids = AllChem.EmbedMultipleConfs(mol, numConfs=n_conf, params=params)
    if len(ids) != n_conf:
        raise RuntimeError(f"embedding {smiles} failed")
    AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)
    return mol


def set_pdb_names(mol: Chem.Mol) -> None:
    counts: dict[str, int] = {}
    for atom in mol.GetAtoms():
        sym = atom.GetSymbol()
        counts[sym] = counts.get(sym, 0) + 1
        info = Chem.AtomPDBResidueInfo()
        info.SetName(f"{sym}{counts[sym]}".ljust(4)[:4])
        info.SetResidueName("MOL")
        info.SetResidueNumber(1)
        info.SetIsHeteroAtom(True)
        atom.SetMonomerInfo(info)


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    for name, (smiles, n_conf) in MOLECULES.items():
        mol = embed(smiles, n_conf)
        set_pdb_names(mol)
        path = os.path.join(OUT, f"{name}.pdb")
        if n_conf == 1:
            Chem.MolToPDBFile(mol, path)
        else:
            # One MODEL record per conformer: several starting structures.
            with open(path, "w") as f:
                for i, conf in enumerate(mol.GetConformers()):
                    block = Chem.MolToPDBBlock(mol, confId=conf.GetId())
                    body = [l for l in block.splitlines() if l.strip() != "END"]
                    f.write(f"MODEL     {i + 1:4d}\n" + "\n".join(body) + "\nENDMDL\n")
                f.write("END\n")
        xyz = os.path.join(OUT, f"{name}.xyz")
        Chem.MolToXYZFile(mol, xyz, confId=0)
        print(f"wrote systems/{name}.pdb ({mol.GetNumAtoms()} atoms, {n_conf} model(s)) and .xyz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
