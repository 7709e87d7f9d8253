"""Build the molecular structures shipped under systems/ (offline, reproducible).

    python python/build_systems.py          # from the repository root

Everything is generated from scratch with RDKit: SMILES -> ETKDGv3 embedding
with a fixed random seed -> MMFF94 minimisation (with dihedral restraints for
the peptides). Coordinates are in Angstrom. Running the script twice gives
byte-identical files (same RDKit version and platform). See systems/README.md.

Outputs
  systems/{caffeine,aspirin,ethanol,hexane}.{pdb,xyz}   original four molecules
      (ethanol.pdb holds 3 conformers as MODEL records)
  systems/molecules/<name>.{pdb,xyz} + index.json        the 17 molecules of the
      batched-force benchmark (residue name MOL, CONECT records)
  systems/peptides/*.{pdb,xyz} + index.json               alanine dipeptide,
      chignolin and Trp-cage, all-atom, PDB/AMBER atom names, chain A

Every structure is checked before it is written (atom count, residue and
atom names, stereochemistry, bond lengths, closest non-bonded contacts,
backbone dihedrals); the script exits non-zero if a check fails.
"""

import json
import math
import os
import random
import sys

import numpy as np
import rdkit
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolDescriptors, rdMolTransforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "systems")

# ---------------------------------------------------------------------------
# 1. The original four molecules (kept byte-identical to earlier releases).
# ---------------------------------------------------------------------------

MOLECULES = {
    # name: (SMILES, number of conformers)
    "caffeine": ("Cn1cnc2c1c(=O)n(C)c(=O)n2C", 1),
    "aspirin": ("CC(=O)Oc1ccccc1C(=O)O", 1),
    "ethanol": ("CCO", 3),
    "hexane": ("CCCCCC", 1),
}

SEED = 20261126


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


def build_original() -> None:
    os.makedirs(OUT, exist_ok=True)
    for name, (smiles, n_conf) in MOLECULES.items():
        mol = embed(smiles, n_conf)
        set_pdb_names(mol)
        check_geometry(mol, name, [c.GetId() for c in mol.GetConformers()])
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


# ---------------------------------------------------------------------------
# Geometry checks shared by everything below.
# ---------------------------------------------------------------------------

ALLOWED_ELEMENTS = {"H", "C", "N", "O"}  # what the ANI-1x model covers


def positions(mol: Chem.Mol, cid: int) -> np.ndarray:
    return np.array(mol.GetConformer(cid).GetPositions())


def check_geometry(mol: Chem.Mol, label: str, cids, min_nonbonded: float = 0.9,
                   max_bond: float = 1.7) -> dict:
    """Elements, bond lengths, closest contacts. Raises on failure."""
    bad = {a.GetSymbol() for a in mol.GetAtoms()} - ALLOWED_ELEMENTS
    if bad:
        raise RuntimeError(f"{label}: elements {bad} not covered by ANI-1x")
    n = mol.GetNumAtoms()
    topo = Chem.GetDistanceMatrix(mol)  # bond-count separation
    iu = np.triu_indices(n, 1)
    sep = topo[iu]
    worst = {"max_bond": 0.0, "min_bond": 9.9, "min_nonbonded": 99.0, "min_1_4plus": 99.0}
    for cid in cids:
        x = positions(mol, cid)
        d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)[iu]
        bonded = d[sep == 1]
        worst["max_bond"] = max(worst["max_bond"], float(bonded.max()))
        worst["min_bond"] = min(worst["min_bond"], float(bonded.min()))
        if n > 2:
            worst["min_nonbonded"] = min(worst["min_nonbonded"], float(d[sep != 1].min()))
        far = d[sep >= 4]  # unreachable fragments have separation 1e8
        if far.size:
            worst["min_1_4plus"] = min(worst["min_1_4plus"], float(far.min()))
    if worst["max_bond"] > max_bond or worst["min_bond"] < 0.9:
        raise RuntimeError(f"{label}: bond length out of range {worst}")
    if worst["min_nonbonded"] < min_nonbonded:
        raise RuntimeError(f"{label}: non-bonded atoms closer than {min_nonbonded} A {worst}")
    return worst


# ---------------------------------------------------------------------------
# 2. The 17 molecules of the batched-force benchmark: systems/molecules/.
# ---------------------------------------------------------------------------

SMALL_MOLECULES = [
    # name, SMILES (neutral gas-phase forms; amino acids not zwitterionic)
    ("water", "O"),
    ("ammonia", "N"),
    ("methane", "C"),
    ("ethanol", "CCO"),
    ("benzene", "c1ccccc1"),
    ("glycine", "NCC(=O)O"),
    ("alanine", "N[C@@H](C)C(=O)O"),  # L-alanine
    ("hexane", "CCCCCC"),
    ("naphthalene", "c1ccc2ccccc2c1"),
    ("anthracene", "c1ccc2cc3ccccc3cc2c1"),
    ("water_cluster", None),  # 10 H2O, built by water_cluster()
    ("adenine", "Nc1ncnc2[nH]cnc12"),  # 9H tautomer
    ("guanine", "Nc1nc2[nH]cnc2c(=O)[nH]1"),  # 9H, 1H-keto tautomer
    ("aspirin", "CC(=O)Oc1ccccc1C(=O)O"),
    ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"),
    ("paracetamol", "CC(=O)Nc1ccc(O)cc1"),
    ("ibuprofen", "CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O"),  # (S)-ibuprofen
]

N_WATERS = 10
WATER_OO = 2.8  # Angstrom, O-O edge of the starting pentagonal prism


def water_cluster() -> Chem.Mol:
    """(H2O)10: oxygens on a pentagonal prism (two stacked pentagons, all
    nearest O-O = 2.8 A), each water with a random orientation drawn from
    Python's random.Random(SEED), then MMFF94 minimisation of the whole
    cluster. A compact, hydrogen-bonded local minimum; not a global minimum."""
    smiles = ".".join(["O"] * N_WATERS)
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    rng = random.Random(SEED)
    radius = WATER_OO / (2.0 * math.sin(math.pi / 5.0))
    centres = []
    for layer in (0, 1):
        for k in range(5):
            ang = 2.0 * math.pi * k / 5.0
            centres.append((radius * math.cos(ang), radius * math.sin(ang), layer * WATER_OO))
    # gas-phase water geometry: r(OH) = 0.9572 A, angle 104.52 deg
    half = math.radians(104.52) / 2.0
    local = np.array([[0.0, 0.0, 0.0],
                      [0.9572 * math.sin(half), 0.0, 0.9572 * math.cos(half)],
                      [-0.9572 * math.sin(half), 0.0, 0.9572 * math.cos(half)]])
    conf = Chem.Conformer(mol.GetNumAtoms())
    for w in range(N_WATERS):
        # random rotation from a random unit quaternion (Shoemake)
        u1, u2, u3 = rng.random(), rng.random(), rng.random()
        q = (math.sqrt(1 - u1) * math.sin(2 * math.pi * u2),
             math.sqrt(1 - u1) * math.cos(2 * math.pi * u2),
             math.sqrt(u1) * math.sin(2 * math.pi * u3),
             math.sqrt(u1) * math.cos(2 * math.pi * u3))
        x, y, z, s = q
        rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * s), 2 * (x * z + y * s)],
                        [2 * (x * y + z * s), 1 - 2 * (x * x + z * z), 2 * (y * z - x * s)],
                        [2 * (x * z - y * s), 2 * (y * z + x * s), 1 - 2 * (x * x + y * y)]])
        xyz = local @ rot.T + np.array(centres[w])
        o = mol.GetAtomWithIdx(w)  # oxygens come first, hydrogens after AddHs
        hs = sorted(nb.GetIdx() for nb in o.GetNeighbors())
        for idx, p in zip([w] + hs, xyz):
            conf.SetAtomPosition(idx, p.tolist())
    mol.AddConformer(conf, assignId=True)
    props = AllChem.MMFFGetMoleculeProperties(mol)
    ff = AllChem.MMFFGetMoleculeForceField(mol, props, ignoreInterfragInteractions=False)
    ff.Minimize(maxIts=20000)
    # order atoms water by water (O, H, H) and name them per residue
    order = []
    for w in range(N_WATERS):
        order += [w] + sorted(nb.GetIdx() for nb in mol.GetAtomWithIdx(w).GetNeighbors())
    mol = Chem.RenumberAtoms(mol, order)
    for i, atom in enumerate(mol.GetAtoms()):
        info = Chem.AtomPDBResidueInfo()
        info.SetName(["O1  ", "H1  ", "H2  "][i % 3])
        info.SetResidueName("MOL")
        info.SetResidueNumber(i // 3 + 1)
        info.SetIsHeteroAtom(True)
        atom.SetMonomerInfo(info)
    return mol


def build_molecules() -> None:
    outdir = os.path.join(OUT, "molecules")
    os.makedirs(outdir, exist_ok=True)
    index = []
    for name, smiles in SMALL_MOLECULES:
        if smiles is None:
            mol = water_cluster()
            smiles = ".".join(["O"] * N_WATERS)
            n_mol = N_WATERS
        else:
            mol = embed(smiles, 1)
            set_pdb_names(mol)
            n_mol = 1
        mol.SetProp("_Name", name)
        geo = check_geometry(mol, name, [0])
        check_stereo(mol, name)
        if name == "water_cluster":
            x = positions(mol, 0)
            oo = np.linalg.norm(x[0::3, None] - x[None, 0::3], axis=-1)[np.triu_indices(N_WATERS, 1)]
            geo["min_OO"] = float(oo.min())
            if oo.min() < 2.5:
                raise RuntimeError(f"water cluster: O-O distance {oo.min():.2f} A < 2.5 A")
        Chem.MolToPDBFile(mol, os.path.join(outdir, f"{name}.pdb"))
        Chem.MolToXYZFile(mol, os.path.join(outdir, f"{name}.xyz"))
        formula = rdMolDescriptors.CalcMolFormula(mol)
        index.append({
            "name": name,
            "pdb": f"{name}.pdb",
            "xyz": f"{name}.xyz",
            "n_atoms": mol.GetNumAtoms(),
            "n_molecules": n_mol,
            "formula": formula,
            "smiles": smiles,
        })
        extra = f", min O-O {geo['min_OO']:.2f} A" if "min_OO" in geo else ""
        print(f"wrote systems/molecules/{name}.pdb/.xyz ({mol.GetNumAtoms()} atoms, {formula}; "
              f"bonds {geo['min_bond']:.2f}-{geo['max_bond']:.2f} A, closest 1-4+ pair "
              f"{geo['min_1_4plus']:.2f} A{extra})")
    write_json(os.path.join(outdir, "index.json"), {
        "generator": "python/build_systems.py",
        "rdkit": rdkit.__version__,
        "method": f"ETKDGv3 (randomSeed {SEED}) + MMFF94 minimisation; water_cluster see README",
        "units": "Angstrom",
        "molecules": index,
    })
    print(f"wrote systems/molecules/index.json ({len(index)} molecules)")


def check_stereo(mol: Chem.Mol, label: str) -> None:
    """The 3D structure must carry the stereocentres the SMILES asked for."""
    want = Chem.FindMolChiralCenters(mol, includeUnassigned=True, useLegacyImplementation=False)
    probe = Chem.Mol(mol)
    Chem.AssignStereochemistryFrom3D(probe, confId=0)
    got = Chem.FindMolChiralCenters(probe, includeUnassigned=True, useLegacyImplementation=False)
    if want != got:
        raise RuntimeError(f"{label}: stereocentres {got} in 3D, expected {want}")


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------------------
# 3. Peptides: systems/peptides/.
# ---------------------------------------------------------------------------
#
# Residue templates: side-chain SMILES (written as the branch on CA) and the
# PDB names of its heavy atoms in SMILES order. Protonation: every titratable
# group is NEUTRAL (gas-phase ANI-1x is trained on neutral molecules):
#   ASP: COOH, proton on OD2 (HD2; AMBER "ASH" form)
#   GLU: COOH, proton on OE2 (HE2; AMBER "GLH" form)
#   LYS: NH2 (HZ2, HZ3; AMBER "LYN" form)
#   ARG: neutral guanidine, NE=CZ double bond, NH1H2 and NH2H2 (no HE)
# Residue names stay the standard PDB ones (ASP, GLU, LYS, ARG).

SIDE_CHAINS = {
    "ALA": ("C", ["CB"]),
    "SER": ("CO", ["CB", "OG"]),
    "THR": ("[C@H](O)C", ["CB", "OG1", "CG2"]),
    "ASN": ("CC(=O)N", ["CB", "CG", "OD1", "ND2"]),
    "GLN": ("CCC(=O)N", ["CB", "CG", "CD", "OE1", "NE2"]),
    "ASP": ("CC(=O)O", ["CB", "CG", "OD1", "OD2"]),
    "GLU": ("CCC(=O)O", ["CB", "CG", "CD", "OE1", "OE2"]),
    "LEU": ("CC(C)C", ["CB", "CG", "CD1", "CD2"]),
    "ILE": ("[C@H](CC)C", ["CB", "CG1", "CD1", "CG2"]),
    "LYS": ("CCCCN", ["CB", "CG", "CD", "CE", "NZ"]),
    "ARG": ("CCCN=C(N)N", ["CB", "CG", "CD", "NE", "CZ", "NH1", "NH2"]),
    "TYR": ("Cc1ccc(O)cc1", ["CB", "CG", "CD1", "CE1", "CZ", "OH", "CE2", "CD2"]),
    "TRP": ("Cc1c[nH]c2ccccc12",
            ["CB", "CG", "CD1", "NE1", "CE2", "CZ2", "CH2", "CZ3", "CE3", "CD2"]),
}

# CIP labels of the L-amino acids (checked on the graph and on every 3D model)
EXPECTED_CIP = {"CA": "S", ("THR", "CB"): "R", ("ILE", "CB"): "S"}

CHI = {  # side-chain dihedrals chi1..chi4 by atom names
    "SER": [("N", "CA", "CB", "OG")],
    "THR": [("N", "CA", "CB", "OG1")],
    "ASN": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")],
    "ASP": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")],
    "GLN": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")],
    "GLU": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")],
    "LEU": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")],
    "ILE": [("N", "CA", "CB", "CG1"), ("CA", "CB", "CG1", "CD1")],
    "LYS": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "CE"),
            ("CG", "CD", "CE", "NZ")],
    "ARG": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "NE"),
            ("CG", "CD", "NE", "CZ")],
    "TYR": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")],
    "TRP": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")],
}

THREE = {"G": "GLY", "A": "ALA", "S": "SER", "T": "THR", "N": "ASN", "Q": "GLN", "D": "ASP",
         "E": "GLU", "L": "LEU", "I": "ILE", "K": "LYS", "R": "ARG", "Y": "TYR", "W": "TRP",
         "P": "PRO"}

# Native dihedrals (degrees; phi, psi, omega, [chi1, chi2, ...]) measured on the
# heavy atoms of NMR model 1 of PDB 1L2Y (Trp-cage) and of PDB 1UAO (chignolin,
# first model), rounded to 1 degree. phi of residue 1 and psi/omega of the last
# residue are undefined (None). These are the only data taken from the PDB.
NATIVE_TRPCAGE = [
    (None, -56, 177, [-68, -4]), (-44, -51, 179, [53, 107]), (-66, -31, 175, [-149, -85]),
    (-65, -46, 176, [-45, -56]), (-65, -30, 172, [-146, 81, -102]), (-73, -43, 178, [179, 79]),
    (-65, -43, -179, [-76, 176]), (-60, -26, 174, [76, 99, 176, -116]),
    (-78, -9, -178, [-93, 52]), (111, 8, 179, []), (55, -124, 178, []), (-58, -29, -177, []),
    (-82, 19, -176, [-61]), (-124, 13, 176, [-144]), (68, 25, -173, []),
    (-144, 131, -180, [59, -175, 88, -90]), (-70, 160, 178, []), (-69, 146, 176, []),
    (-77, 124, 172, []), (-78, None, None, [-60]),
]
NATIVE_CHIGNOLIN = [
    (None, -177, -180, []), (-85, 98, 180, [-180, 87]), (-72, 115, -180, [-175, 57]),
    (-76, -13, 180, []), (-60, -39, 180, [-156, -107, 28]), (-107, -22, 180, [75]),
    (91, 34, 180, []), (-161, 165, 180, [16]), (-69, 107, -180, [-36, 95]), (-49, None, None, []),
]
# Native C-alpha coordinates (Angstrom, same models), only used to report the
# C-alpha RMSD of the rebuilt folded structures.
NATIVE_CA = {
    "trpcage": [(-8.608, 3.135, -1.618), (-4.923, 4.002, -2.452), (-3.690, 2.738, 0.981),
                (-5.857, -0.449, 0.613), (-4.122, -1.167, -2.743), (-0.716, -0.631, -0.993),
                (-1.641, -2.932, 1.963), (-3.024, -5.791, -0.269), (0.466, -6.016, -1.905),
                (2.060, -6.618, 1.593), (2.626, -2.967, 2.723), (6.333, -2.533, 3.806),
                (7.049, -6.179, 2.704), (6.389, -5.315, -1.015), (9.451, -3.116, -1.870),
                (7.289, 0.084, -2.054), (6.782, 3.088, 0.345), (3.287, 4.031, 1.686),
                (1.185, 6.543, -0.353), (0.852, 10.027, 1.285)],
    "chignolin": [(-6.878, -0.708, 2.896), (-4.189, -0.302, 0.213), (-1.287, 1.320, 2.084),
                  (0.579, 3.407, -0.513), (3.531, 3.694, 1.893), (4.684, 0.239, 0.748),
                  (2.498, -0.018, -2.375), (0.411, -3.025, -1.274), (-2.598, -4.011, 0.868),
                  (-1.229, -3.774, 4.431)],
}

# Extended chains: every phi/psi restrained to these values (Pro phi, which
# sits in the pyrrolidine ring, to -70), omega 180; side chains start from chi1 = -60 and the
# other chi = 180 and then relax freely.
EXTENDED_PHI_PSI = (-150.0, 150.0)

# Alanine dipeptide conformers (phi, psi), gas-phase MMFF-style minima regions
ALADIP_CONFORMERS = [
    ("c7eq", -83.0, 73.0),
    ("c5", -155.0, 160.0),
    ("alphaR", -65.0, -40.0),
    ("c7ax", 73.0, -60.0),
]

RESTRAINT_K = 1.0  # torsion restraint E = k (deviation in degrees)^2, kcal/mol/deg^2
MAX_GRADIENT = 0.05  # kcal/mol/A, largest gradient component accepted after minimisation


class Peptide:
    """An all-atom peptide with PDB names: mol plus per-atom (resname, resnum, name)."""

    def __init__(self, seq: str, nterm: str, cterm: str):
        residues = [THREE[c] for c in seq]
        parts, info = [], []
        resnum = 1
        if nterm == "ACE":
            parts.append("CC(=O)")
            info += [("ACE", 1, "CH3"), ("ACE", 1, "C"), ("ACE", 1, "O")]
            resnum = 2
        elif nterm != "NH2":
            raise ValueError(nterm)
        self.first = resnum
        for rn in residues:
            if rn == "GLY":
                smi, names = "NCC(=O)", ["N", "CA", "C", "O"]
            elif rn == "PRO":
                smi, names = "N1[C@@H](CCC1)C(=O)", ["N", "CA", "CB", "CG", "CD", "C", "O"]
            else:
                side, snames = SIDE_CHAINS[rn]
                smi, names = f"N[C@@H]({side})C(=O)", ["N", "CA", *snames, "C", "O"]
            parts.append(smi)
            info += [(rn, resnum, nm) for nm in names]
            resnum += 1
        self.last = resnum - 1
        if cterm == "NME":
            parts.append("NC")
            info += [("NME", resnum, "N"), ("NME", resnum, "CH3")]
        elif cterm == "COOH":
            parts.append("O")
            info.append((residues[-1], resnum - 1, "OXT"))
        else:
            raise ValueError(cterm)
        self.residues = residues
        self.nterm, self.cterm = nterm, cterm
        self.smiles = "".join(parts)
        heavy = Chem.MolFromSmiles(self.smiles)
        if heavy.GetNumAtoms() != len(info):
            raise RuntimeError("template atom count mismatch")
        for atom, (_, _, nm) in zip(heavy.GetAtoms(), info):
            if atom.GetSymbol() != nm[0]:
                raise RuntimeError(f"template element mismatch at {nm}")
        mol = Chem.AddHs(heavy)
        # hydrogens: named after their heavy atom, listed after the heavy
        # atoms of their residue (the usual PDB order)
        full = list(info)
        for atom in heavy.GetAtoms():
            i = atom.GetIdx()
            hs = sorted(nb.GetIdx() for nb in mol.GetAtomWithIdx(i).GetNeighbors()
                        if nb.GetSymbol() == "H")
            rn, rnum, nm = info[i]
            for h, hname in zip(hs, hydrogen_names(nm, len(hs))):
                full_index_fill(full, h, (rn, rnum, hname))
        order = sorted(range(mol.GetNumAtoms()),
                       key=lambda k: (full[k][1], mol.GetAtomWithIdx(k).GetSymbol() == "H", k))
        mol = Chem.RenumberAtoms(mol, order)
        self.info = [full[k] for k in order]
        for atom, (rn, rnum, nm) in zip(mol.GetAtoms(), self.info):
            pdb = Chem.AtomPDBResidueInfo()
            pdb.SetName(nm)
            pdb.SetResidueName(rn)
            pdb.SetResidueNumber(rnum)
            pdb.SetChainId("A")
            pdb.SetIsHeteroAtom(False)
            atom.SetMonomerInfo(pdb)
        self.mol = mol
        self.index = {(rnum, nm): k for k, (_, rnum, nm) in enumerate(self.info)}
        if len(self.index) != len(self.info):
            raise RuntimeError("duplicate atom names within a residue")
        self.check_cip(mol, None)

    # -- names ------------------------------------------------------------
    def idx(self, resnum: int, name: str) -> int:
        return self.index[(resnum, name)]

    def check_cip(self, mol: Chem.Mol, cid) -> None:
        probe = Chem.Mol(mol)
        if cid is not None:
            Chem.AssignStereochemistryFrom3D(probe, confId=cid)
        else:
            Chem.AssignStereochemistry(probe, cleanIt=True, force=True)
        for k, (rn, rnum, nm) in enumerate(self.info):
            want = None
            if nm == "CA" and rn not in ("GLY", "ACE", "NME"):
                want = EXPECTED_CIP["CA"]
            elif (rn, nm) in EXPECTED_CIP:
                want = EXPECTED_CIP[(rn, nm)]
            if want is None:
                continue
            got = probe.GetAtomWithIdx(k).GetPropsAsDict().get("_CIPCode")
            if got != want:
                raise RuntimeError(f"{rn}{rnum} {nm}: CIP {got}, expected {want} (conf {cid})")

    # -- dihedrals ----------------------------------------------------------
    def backbone(self):
        """(resnum, phi atoms or None, psi atoms or None, omega atoms or None)."""
        out = []
        for r in range(self.first, self.last + 1):
            prev_c = (self.idx(r - 1, "C") if r > self.first or self.nterm == "ACE" else None)
            n, ca, c = self.idx(r, "N"), self.idx(r, "CA"), self.idx(r, "C")
            if r < self.last or self.cterm == "NME":
                nxt_n = self.idx(r + 1, "N")
                nxt_ca = self.idx(r + 1, "CA" if r < self.last else "CH3")
            else:
                nxt_n = nxt_ca = None
            phi = (prev_c, n, ca, c) if prev_c is not None else None
            psi = (n, ca, c, nxt_n) if nxt_n is not None else None
            omega = (ca, c, nxt_n, nxt_ca) if nxt_n is not None else None
            out.append((r, phi, psi, omega))
        return out

    def cap_omega(self):
        if self.nterm == "ACE":
            return (self.idx(1, "CH3"), self.idx(1, "C"), self.idx(2, "N"), self.idx(2, "CA"))
        return None

    def chis(self, r: int):
        rn = self.residues[r - self.first]
        return [tuple(self.idx(r, a) for a in q) for q in CHI.get(rn, [])]


def full_index_fill(full: list, idx: int, value) -> None:
    while len(full) <= idx:
        full.append(None)
    full[idx] = value


def hydrogen_names(heavy: str, n_h: int) -> list:
    """PDB v3 / AMBER hydrogen names from the parent heavy-atom name."""
    if n_h == 0:
        return []
    if heavy == "N":  # backbone amide; free neutral N-terminus has two
        return ["H"] if n_h == 1 else ["H1", "H2", "H3"][:n_h]
    suffix = heavy[1:]  # CA -> A, CH3 -> H3, OXT -> XT, NH1 -> H1
    if n_h == 1:
        return ["H" + suffix]
    if n_h == 2:
        if heavy[0] == "N" and suffix[-1].isdigit():  # ND2 -> HD21 HD22, NH1 -> HH11 HH12
            return [f"H{suffix}1", f"H{suffix}2"]
        return [f"H{suffix}2", f"H{suffix}3"]  # CB -> HB2 HB3, CG1 -> HG12 HG13, NZ -> HZ2 HZ3
    return [f"H{suffix}{i}" for i in range(1, n_h + 1)]  # CB -> HB1-3, CD1 -> HD11-13


def dihedral(x: np.ndarray, q) -> float:
    p0, p1, p2, p3 = (x[i] for i in q)
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return math.degrees(math.atan2(np.dot(np.cross(b1, v), w), np.dot(v, w)))


def in_ring(mol: Chem.Mol, q) -> bool:
    return mol.GetBondBetweenAtoms(q[1], q[2]).IsInRing()


def conformer(x: np.ndarray) -> Chem.Conformer:
    conf = Chem.Conformer(len(x))
    for k, p in enumerate(x):
        conf.SetAtomPosition(k, p.tolist())
    return conf


def build_conformer(pep: Peptide, targets, seed_conf: np.ndarray, preset=(),
                    restrain=True, max_rounds: int = 20) -> np.ndarray:
    """Copy seed_conf, set dihedrals (targets are restrained, preset ones only
    set), MMFF94-minimise with the restraints, return the new positions."""
    mol = Chem.Mol(pep.mol)
    mol.RemoveAllConformers()
    cid = mol.AddConformer(conformer(seed_conf), assignId=True)
    conf = mol.GetConformer(cid)
    for q, value in list(preset) + list(targets):
        if not in_ring(mol, q):
            rdMolTransforms.SetDihedralDeg(conf, *q, float(value))
    props = AllChem.MMFFGetMoleculeProperties(mol)
    ff = AllChem.MMFFGetMoleculeForceField(mol, props, confId=cid)
    if restrain:
        for q, value in targets:
            ff.MMFFAddTorsionConstraint(*q, False, float(value), float(value), RESTRAINT_K)
    # Minimize() also reports success when its line search stalls, so check
    # the gradient too and restart (fresh BFGS) until both agree
    for _ in range(max_rounds):
        status = ff.Minimize(maxIts=2000)
        grad = float(np.abs(np.array(ff.CalcGrad())).max())
        if status == 0 and grad <= MAX_GRADIENT:
            break
    else:
        raise RuntimeError(f"MMFF minimisation did not converge (max gradient {grad:.3f})")
    return np.array(mol.GetConformer(cid).GetPositions())


def embed_peptide(pep: Peptide, seed: int) -> np.ndarray:
    mol = Chem.Mol(pep.mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.useRandomCoords = True  # needed for Trp-cage (the eigenvalue start fails)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError("peptide embedding failed")
    return np.array(mol.GetConformer().GetPositions())


def extended_targets(pep: Peptide):
    phi0, psi0 = EXTENDED_PHI_PSI
    targets, preset = [], []
    for r, phi, psi, omega in pep.backbone():
        if phi is not None:  # Pro phi sits in its ring: restrained to -70, not set
            targets.append((phi, -70.0 if pep.residues[r - pep.first] == "PRO" else phi0))
        if psi is not None:
            targets.append((psi, psi0))
        if omega is not None:
            targets.append((omega, 180.0))
        for k, q in enumerate(pep.chis(r)):
            preset.append((q, -60.0 if k == 0 else 180.0))
    if pep.cap_omega():
        targets.append((pep.cap_omega(), 180.0))
    return targets, preset


def native_targets(pep: Peptide, native):
    targets = []
    for (r, phi, psi, omega), (phi0, psi0, om0, chis0) in zip(pep.backbone(), native):
        for q, value in ((phi, phi0), (psi, psi0), (omega, om0)):
            if q is not None and value is not None:
                targets.append((q, value))
        chis = pep.chis(r)
        if len(chis) != len(chis0):
            raise RuntimeError(f"residue {r}: chi count mismatch")
        targets += list(zip(chis, chis0))
    return targets


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    s[-1] *= d
    e = (a * a).sum() + (b * b).sum() - 2.0 * s.sum()
    return math.sqrt(max(e, 0.0) / len(a))


def peptide_report(pep: Peptide, label: str, confs, targets_per_conf=None) -> dict:
    """Checks on a list of conformers of one peptide; returns a summary."""
    mol = Chem.Mol(pep.mol)
    mol.RemoveAllConformers()
    cids = [mol.AddConformer(conformer(c), assignId=True) for c in confs]
    geo = check_geometry(mol, label, cids)
    if geo["min_1_4plus"] < 1.5:
        raise RuntimeError(f"{label}: close contact {geo['min_1_4plus']:.2f} A")
    report = {"geometry": {k: round(v, 3) for k, v in geo.items()}, "models": []}
    for m, cid in enumerate(cids):
        pep.check_cip(mol, cid)
        x = positions(mol, cid)
        bb = []
        for r, phi, psi, omega in pep.backbone():
            vals = [None if q is None else round(dihedral(x, q), 1) for q in (phi, psi, omega)]
            vals = [180.0 if v == -180.0 else v for v in vals]
            if vals[2] is not None and abs(vals[2]) < 150.0:
                raise RuntimeError(f"{label}: omega of residue {r} = {vals[2]} (not trans)")
            bb.append((r, *vals))
        cap = pep.cap_omega()
        if cap is not None and abs(dihedral(x, cap)) < 150.0:
            raise RuntimeError(f"{label}: ACE omega not trans")
        max_dev = 0.0
        if targets_per_conf is not None:
            for q, value in targets_per_conf[m]:
                dev = abs((dihedral(x, q) - value + 180.0) % 360.0 - 180.0)
                max_dev = max(max_dev, dev)
        report["models"].append({
            "phi_psi_omega": bb,
            "max_restraint_dev_deg": round(max_dev, 1),
        })
    return report


def pdb_text(pep: Peptide, confs, remarks) -> str:
    """PDB with ATOM records, chain A, element column, TER and CONECT records
    (all bonds, listed from both ends). Several conformers -> MODEL records,
    each model carrying its own CONECT block like systems/ethanol.pdb."""
    mol = pep.mol
    lines = [f"REMARK   1 {r}" for r in remarks]
    conect = []
    for atom in mol.GetAtoms():
        nbrs = sorted(nb.GetIdx() + 1 for nb in atom.GetNeighbors())
        conect.append(f"CONECT{atom.GetIdx() + 1:5d}" + "".join(f"{j:5d}" for j in nbrs))
    n = mol.GetNumAtoms()
    for m, conf in enumerate(confs):
        if len(confs) > 1:
            lines.append(f"MODEL     {m + 1:4d}")
        x = conf
        for k, (rn, rnum, nm) in enumerate(pep.info):
            el = mol.GetAtomWithIdx(k).GetSymbol()
            field = nm if len(nm) == 4 else f" {nm:<3s}"
            lines.append(f"ATOM  {k + 1:5d} {field} {rn:>3s} A{rnum:4d}    "
                         f"{x[k, 0]:8.3f}{x[k, 1]:8.3f}{x[k, 2]:8.3f}{1.0:6.2f}{0.0:6.2f}"
                         f"          {el:>2s}  ")
        rn, rnum, _ = pep.info[-1]
        lines.append(f"TER   {n + 1:5d}      {rn:>3s} A{rnum:4d}")
        lines += conect
        if len(confs) > 1:
            lines.append("ENDMDL")
    lines.append("END")
    return "\n".join(lines) + "\n"


def write_peptide(pep: Peptide, name: str, confs, remarks, outdir: str, xyz: bool = True):
    with open(os.path.join(outdir, f"{name}.pdb"), "w") as f:
        f.write(pdb_text(pep, confs, remarks))
    files = [f"{name}.pdb"]
    if xyz and len(confs) == 1:
        mol = Chem.Mol(pep.mol)
        mol.RemoveAllConformers()
        mol.AddConformer(conformer(confs[0]), assignId=True)
        mol.SetProp("_Name", name)
        Chem.MolToXYZFile(mol, os.path.join(outdir, f"{name}.xyz"))
        files.append(f"{name}.xyz")
    return files


def fmt_bb(report: dict, model: int = 0) -> str:
    out = []
    for r, phi, psi, omega in report["models"][model]["phi_psi_omega"]:
        out.append(f"{r}:{'-' if phi is None else f'{phi:.0f}'}/{'-' if psi is None else f'{psi:.0f}'}")
    return " ".join(out)


def build_peptides() -> None:
    outdir = os.path.join(OUT, "peptides")
    os.makedirs(outdir, exist_ok=True)
    index = []
    common = [f"generated by python/build_systems.py with RDKit {rdkit.__version__}",
              f"ETKDGv3 (useRandomCoords) randomSeed {SEED}, MMFF94 minimised; units Angstrom"]

    def record(name, pep, files, report, description, extra=None):
        entry = {
            "name": name,
            "files": files,
            "n_atoms": pep.mol.GetNumAtoms(),
            "n_models": len(report["models"]),
            "sequence": [f"{rn}{rnum}" for rn, rnum in dict.fromkeys((a, b) for a, b, _ in pep.info)],
            "termini": {"ACE": "ACE cap", "NH2": "neutral NH2"}[pep.nterm] + ", "
                       + {"NME": "NME cap", "COOH": "neutral COOH"}[pep.cterm],
            "formula": rdMolDescriptors.CalcMolFormula(pep.mol),
            "description": description,
            "checks": json.loads(json.dumps(report)),  # a copy, reformatted below
        }
        if extra:
            entry.update(extra)
        for model in entry["checks"]["models"]:
            model["phi_psi_omega"] = [
                f"{pep.residues[r - pep.first]}{r} " + " ".join("-" if v is None else f"{v:.1f}" for v in vals)
                for r, *vals in model["phi_psi_omega"]]
        index.append(entry)
        g = report["geometry"]
        print(f"wrote systems/peptides/{files[0]} ({entry['n_atoms']} atoms, "
              f"{entry['n_models']} model(s); bonds {g['min_bond']:.2f}-{g['max_bond']:.2f} A, "
              f"closest 1-4+ pair {g['min_1_4plus']:.2f} A)")

    # --- alanine dipeptide ACE-ALA-NME -----------------------------------
    pep = Peptide("A", "ACE", "NME")
    if pep.mol.GetNumAtoms() != 22:
        raise RuntimeError("alanine dipeptide must have 22 atoms")
    seed_conf = embed_peptide(pep, SEED)
    (r, phi, psi, omega), = pep.backbone()
    confs, targets = [], []
    for _, phi0, psi0 in ALADIP_CONFORMERS:
        t = [(phi, phi0), (psi, psi0), (omega, 180.0), (pep.cap_omega(), 180.0)]
        confs.append(build_conformer(pep, t, seed_conf))
        targets.append(t)
    rep = peptide_report(pep, "alanine_dipeptide_conformers", confs, targets)
    files = write_peptide(pep, "alanine_dipeptide_conformers", confs, common + [
        "ACE-ALA-NME, MODELs: " + ", ".join(f"{n} (phi {a:.0f}, psi {b:.0f})"
                                            for n, a, b in ALADIP_CONFORMERS),
        "backbone phi/psi/omega restrained during minimisation"], outdir)
    record("alanine_dipeptide_conformers", pep, files, rep,
           "4 models: C7eq, C5, alphaR, C7ax; phi/psi restrained to the listed values, "
           "everything else MMFF94-relaxed",
           {"models": [{"label": n, "phi": a, "psi": b} for n, a, b in ALADIP_CONFORMERS]})
    for k, (label, phi0, psi0) in enumerate(ALADIP_CONFORMERS[:3]):
        rep = peptide_report(pep, f"alanine_dipeptide_{label}", [confs[k]], [targets[k]])
        files = write_peptide(pep, f"alanine_dipeptide_{label}", [confs[k]], common + [
            f"ACE-ALA-NME {label}, phi/psi restrained to {phi0:.0f}/{psi0:.0f}"], outdir)
        record(f"alanine_dipeptide_{label}", pep, files, rep,
               f"{label}: phi/psi restrained to {phi0:.0f}/{psi0:.0f}, rest MMFF94-relaxed")
    # default structure: unrestrained MMFF94 minimum reached from the C7eq model
    default = build_conformer(pep, [], confs[0], restrain=False)
    rep = peptide_report(pep, "alanine_dipeptide", [default])
    files = write_peptide(pep, "alanine_dipeptide", [default], common + [
        "ACE-ALA-NME default: unrestrained MMFF94 minimum started from C7eq"], outdir)
    record("alanine_dipeptide", pep, files, rep,
           "default: unrestrained MMFF94 minimum started from the C7eq model "
           f"(phi/psi {fmt_bb(rep)})")

    # --- chignolin and Trp-cage -------------------------------------------
    for name, seq, native, pdb_id in (("chignolin", "GYDPETGTWG", NATIVE_CHIGNOLIN, "1UAO"),
                                      ("trpcage", "NLYIQWLKDGGPSSGRPPPS", NATIVE_TRPCAGE, "1L2Y")):
        pep = Peptide(seq, "NH2", "COOH")
        seed_conf = embed_peptide(pep, SEED)
        prot = ("termini neutral (NH2 / COOH); ASP, GLU as COOH (HD2 / HE2), LYS as NH2 "
                "(HZ2, HZ3), ARG neutral (NE=CZ, no HE)")
        # extended
        targets, preset = extended_targets(pep)
        ext = build_conformer(pep, targets, seed_conf, preset=preset)
        rep = peptide_report(pep, f"{name}_extended", [ext], [targets])
        files = write_peptide(pep, f"{name}_extended", [ext], common + [
            f"{name} {seq}, extended: phi/psi restrained to -150/150 (Pro phi -70), omega 180",
            prot], outdir)
        record(f"{name}_extended", pep, files, rep,
               "extended chain: every non-Pro phi restrained to -150 (Pro phi -70), every psi to 150, "
               "omega to 180; side chains relaxed from chi1 -60, chi2+ 180")
        print(f"    phi/psi {fmt_bb(rep)}")
        # folded: backbone + side-chain dihedrals of the NMR structure
        targets = native_targets(pep, native)
        fold = build_conformer(pep, targets, seed_conf)
        rep = peptide_report(pep, f"{name}_folded", [fold], [targets])
        x = fold
        ca = np.array([x[pep.idx(r, "CA")] for r in range(pep.first, pep.last + 1)])
        rmsd = kabsch_rmsd(ca, np.array(NATIVE_CA[name]))
        files = write_peptide(pep, f"{name}_folded", [fold], common + [
            f"{name} {seq}, folded: rebuilt with phi/psi/omega/chi restrained to PDB {pdb_id}",
            f"(model 1) values; C-alpha RMSD to {pdb_id} {rmsd:.2f} A; not the deposited coordinates",
            prot], outdir)
        record(f"{name}_folded", pep, files, rep,
               f"folded: phi, psi, omega and chi restrained to the values of PDB {pdb_id} model 1, "
               "everything else MMFF94-relaxed; hydrogens and protonation are ours",
               {"ca_rmsd_to_native_A": round(rmsd, 2), "native_pdb": pdb_id})
        print(f"    C-alpha RMSD to {pdb_id}: {rmsd:.2f} A; max restraint deviation "
              f"{rep['models'][0]['max_restraint_dev_deg']} deg")
    write_json(os.path.join(outdir, "index.json"), {
        "generator": "python/build_systems.py",
        "rdkit": rdkit.__version__,
        "units": "Angstrom",
        "peptides": index,
    })
    print(f"wrote systems/peptides/index.json ({len(index)} entries)")


def main() -> int:
    build_original()
    build_molecules()
    build_peptides()
    return 0


if __name__ == "__main__":
    sys.exit(main())
