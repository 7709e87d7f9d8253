"""Solvate a peptide in a cubic periodic box of TIP3P water (offline, deterministic).

    .venv/bin/python python/solvate.py systems/peptides/chignolin_folded.pdb \\
        --padding 10 --out systems/solvated/chignolin_water.pdb

(from the repository root; `make systems` builds the shipped boxes, about
3 min each on 2 cores). Needs OpenMM (PyPI `openmm`, no torch dependency)
and NumPy; the water comes from python/build_water.py.

Input: one PDB frame with every hydrogen, an element column, elements
H/C/N/O only, and CONECT records for every bond (systems/peptides/*.pdb).

1. The peptide's net formal charge is worked out from its bond graph
   (`formal_charges`). It must be 0: the box gets no ions, because ANI-1x,
   the engine's model, covers only H, C, N and O (no Na+, no Cl-). A charged
   peptide is refused (there is no option to add ions); neutralise it
   through its protonation states, as systems/peptides/ does, and solvate
   that.
2. The cubic cell must be at least L_min = (largest extent of the peptide's
   bounding box) + 2 x padding wide, and at least MIN_EDGE (twice the 5.2 A
   ANI-1x cut-off plus a margin).
3. Water: build_water.build(n), the recipe of systems/water/: n TIP3P waters
   cut out of OpenMM's pre-equilibrated box by Modeller.addSolvent, in a
   cubic cell whose edge gives 0.99651 g/cm^3, minimised and equilibrated
   for 5 ps (NVT Langevin, 300 K, seed --seed) in that periodic cell, so
   there is no seam at the cell faces. n is the fewest waters whose cell edge
   L is at least L_min; L (0.001 A) is the box edge.
4. The peptide is translated by a vector rounded to 0.001 A that puts its
   bounding-box centre at the cell centre; its coordinates are otherwise kept
   exactly. Every water is dropped whose oxygen is closer to a peptide atom
   than Modeller.addSolvent's criterion, 2^(1/6)/2 (sigma_O(TIP3P) + sigma),
   with Amber ff14SB's sigma per element (hydrogens: on C or on N/O), or that
   breaks the water-peptide contact limits below (`carve`). Each water's
   oxygen lies in [0, L); molecules are whole, so hydrogens may stick out of
   the cell by up to one O-H bond. Nothing else moves.

Written: the PDB (REMARK 1 provenance, then the input's REMARK lines, CRYST1,
the peptide's ATOM records as in the input but translated, TER, HETATM
residues HOH in chain W numbered from 1 with atoms O, H1, H2, CONECT for
every bond listed from both ends: the input's peptide bonds and each water's
two O-H bonds, END), and its entry in index.json next to it (the entry for
the same file name is replaced, the others are kept).

Checked on the written file, exit status 1 otherwise (`check_box`): CRYST1
present and equal to L; elements H/C/N/O only; net formal charge 0 for the
whole box; atom and bond counts (the input's bonds + 2 per water); peptide
records and bonds identical to the input up to the translation; the peptide
at least `padding` from every face; water names O/H1/H2, O-H 0.9572 +- 0.0075 A
and H-O-H 104.52 +- 1 deg, every oxygen in [0, L); and, with minimum-image
distances: no water oxygen within 2.5 A of a peptide heavy atom, no water
atom within 1.5 A of a peptide atom, no two water oxygens within 2.4 A and no
other pair of atoms of different waters within 1.4 A (hydrogen-bonded O...H
in the equilibrated TIP3P boxes come down to about 1.5 A). OpenMM's PDBFile
must read the same atoms, bonds and cell. Two runs give byte-identical files
(same OpenMM and NumPy versions, CPU platform).
"""

import argparse
import json
import os
import platform
import sys
from dataclasses import dataclass

import numpy as np
import openmm
from openmm import app, unit

import build_water
from build_water import AVOGADRO, DENSITY_G_CM3, M_WATER

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ELEMENTS = ("H", "C", "N", "O")  # what ANI-1x covers
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2}
MIN_EDGE = 11.0  # A: 2 x 5.2 A (ANI-1x cut-off) + margin
MIN_PADDING = 3.0  # A: the peptide and its images then stay > 5.2 A apart
MAX_ATOMS = 99_999  # PDB serial numbers (5 columns; no hybrid-36 here)
MAX_WATERS = 9_999  # PDB residue numbers (4 columns)
WATER_CHAIN = "W"

# Contact limits (A), used both to drop waters and to check the box.
MIN_O_TO_SOLUTE_HEAVY = 2.5
MIN_WATER_TO_SOLUTE = 1.5
MIN_OO = 2.4
MIN_WATER_WATER = 1.4

# Rigid TIP3P geometry and the tolerances of the check (3-decimal coordinates).
R_OH, R_OH_TOL = 0.9572, 0.0075
HOH_DEG, HOH_TOL_DEG = 104.52, 1.0

# Modeller.addSolvent's overlap criterion: a water goes if its oxygen is
# closer to a solute atom than 2^(1/6)/2 (sigma_O + sigma_atom). Sigmas (A)
# of TIP3P's oxygen and of Amber ff14SB's CT, N, O, HC and H types.
VDW_RADIUS_PER_SIGMA = 2 ** (1 / 6) / 2
SIGMA_TIP3P_O = 3.1507524065751241
SIGMA_SOLUTE = {"C": 3.39967, "N": 3.25, "O": 2.95992,
                "HC": 2.64953,  # H on carbon
                "HX": 1.06908}  # H on N or O (hydrogen-bond donor)


@dataclass
class Peptide:
    """One PDB frame: records as read, with positions and bonds parsed."""

    remarks: list[str]  # REMARK lines, verbatim
    records: list[str]  # ATOM/HETATM lines, verbatim
    elements: list[str]
    positions: np.ndarray  # (n, 3) Angstrom, as written (3 decimals)
    bonds: list[tuple[int, int]]  # atom indices, i < j, sorted


def parse_records(lines: list[str]) -> tuple[list[str], list[tuple[int, int]], str | None]:
    """ATOM/HETATM records, bonds (serial-number pairs, i < j, sorted), CRYST1 line."""
    records, bonds, cryst1 = [], set(), None
    for line in lines:
        if line.startswith(("ATOM  ", "HETATM")):
            records.append(line)
        elif line.startswith("CONECT"):
            fields = [line[k:k + 5] for k in range(6, len(line.rstrip()), 5)]
            serials = [int(f) for f in fields if f.strip()]
            for other in serials[1:]:
                bonds.add((min(serials[0], other), max(serials[0], other)))
        elif line.startswith("CRYST1"):
            cryst1 = line
    return records, sorted(bonds), cryst1


def serial_index(records: list[str]) -> dict[int, int]:
    """Atom serial number -> index in `records`."""
    return {int(r[6:11]): i for i, r in enumerate(records)}


def coordinates(records: list[str]) -> np.ndarray:
    return np.array([[float(r[30:38]), float(r[38:46]), float(r[46:54])] for r in records])


def read_peptide(path: str) -> Peptide:
    """Parse the input; raises ValueError if it is not one complete frame."""
    with open(path) as f:
        lines = f.read().splitlines()
    if sum(line.startswith("MODEL") for line in lines) > 1:
        raise ValueError(f"{path}: more than one MODEL; give one frame")
    records, serial_bonds, _ = parse_records(lines)
    if not records:
        raise ValueError(f"{path}: no ATOM/HETATM records")
    elements = [r[76:78].strip().capitalize() if len(r) >= 78 else "" for r in records]
    unknown = sorted({e or "(none)" for e in elements} - set(ELEMENTS))
    if unknown:
        raise ValueError(f"{path}: elements {unknown}; ANI-1x covers only {'/'.join(ELEMENTS)} "
                         "(an element column is required)")
    index = serial_index(records)
    if list(index) != list(range(1, len(records) + 1)):
        raise ValueError(f"{path}: atom serial numbers must run 1, 2, ..., {len(records)} "
                         "(one TER at most, after the last atom)")
    try:
        bonds = sorted((min(index[a], index[b]), max(index[a], index[b])) for a, b in serial_bonds)
    except KeyError as exc:
        raise ValueError(f"{path}: CONECT names atom serial {exc}, which has no record") from None
    if not bonds:
        raise ValueError(f"{path}: no CONECT records; every bond must be listed")
    remarks = [line for line in lines if line.startswith("REMARK")]
    return Peptide(remarks, records, elements, coordinates(records), bonds)


# ---------------------------------------------------------------------------
# Net formal charge from the bond graph
# ---------------------------------------------------------------------------


def maximum_matching(nodes: set[int], neighbours: list[list[int]]) -> dict[int, int]:
    """A largest set of disjoint edges among `nodes` (partner of each matched
    node). Exhaustive per connected component, lowest index first, so the
    result is deterministic; the components here are small conjugated groups
    (a carbonyl, a ring), and larger ones are refused."""
    matched: dict[int, int] = {}
    for component in connected_components(nodes, neighbours):
        if len(component) > 40:
            raise ValueError(f"a conjugated group of {len(component)} atoms is too large to assign")
        best: list[dict[int, int]] = [{}]

        def search(free: list[int], current: dict[int, int]) -> None:
            if len(current) // 2 + len(free) // 2 <= len(best[0]) // 2:
                return
            if not free:
                best[0] = dict(current)
                return
            v, rest = free[0], free[1:]
            for u in neighbours[v]:
                if u in rest:
                    search([w for w in rest if w != u], {**current, v: u, u: v})
            search(rest, current)

        search(sorted(component), {})
        matched.update(best[0])
    return matched


def connected_components(nodes: set[int], neighbours: list[list[int]]) -> list[list[int]]:
    """Components of the graph restricted to `nodes`, each sorted, in order of their first node."""
    seen, components = set(), []
    for start in sorted(nodes):
        if start in seen:
            continue
        stack, component = [start], []
        seen.add(start)
        while stack:
            v = stack.pop()
            component.append(v)
            for u in neighbours[v]:
                if u in nodes and u not in seen:
                    seen.add(u)
                    stack.append(u)
        components.append(sorted(component))
    return components


def formal_charges(elements: list[str], bonds: list[tuple[int, int]]) -> list[int]:
    """Formal charge of each atom of an H/C/N/O structure with every hydrogen
    explicit, from its bond graph.

    An atom has VALENCE - (number of bonds) free valences; the Lewis structure
    with the most double bonds pairs free valences of bonded atoms (a maximum
    matching). Then: N with four bonds or O with three is +1; a C left with a
    free valence takes a double bond from a bonded three-bond N, which becomes
    +1 (guanidinium, amidinium, imidazolium); an O or N left with one is first
    offered the same (nitro), else it is -1 (carboxylate). Radicals, carbenes,
    triple bonds and over-bonded atoms raise ValueError. This covers the usual
    organic and biomolecular groups; the graph alone cannot fix every case.
    """
    n = len(elements)
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for i, j in bonds:
        neighbours[i].append(j)
        neighbours[j].append(i)
    free = [VALENCE[e] - len(neighbours[i]) for i, e in enumerate(elements)]
    charges = [0] * n
    for i, e in enumerate(elements):
        if free[i] == -1 and e in ("N", "O"):
            charges[i] = 1
        elif free[i] < 0 or free[i] > 1 or (e == "H" and free[i] != 0):
            raise ValueError(f"atom {i + 1} ({e}) has {len(neighbours[i])} bonds: "
                             "cannot assign a formal charge")
    unsaturated = {i for i in range(n) if free[i] == 1}
    pairs = maximum_matching(unsaturated, neighbours)
    donors = {i for i in range(n) if elements[i] == "N" and free[i] == 0}
    for i in sorted(unsaturated - set(pairs), key=lambda k: (elements[k] != "C", k)):
        donor = next((j for j in sorted(neighbours[i]) if j in donors), None)
        if donor is not None:
            donors.discard(donor)
            charges[donor] = 1
        elif elements[i] == "C":
            raise ValueError(f"atom {i + 1} (C) has an unpaired valence: cannot assign a formal charge")
        else:
            charges[i] = -1
    return charges


# ---------------------------------------------------------------------------
# Building the box
# ---------------------------------------------------------------------------


def minimum_edge(positions: np.ndarray, padding: float) -> float:
    """Smallest cubic edge (A): bounding-box extent + 2 padding, at least MIN_EDGE."""
    extent = float((positions.max(axis=0) - positions.min(axis=0)).max())
    return max(extent + 2 * padding, MIN_EDGE)


def centring_shift(positions: np.ndarray, L: float) -> np.ndarray:
    """Translation (A, rounded to 0.001 A) putting the bounding-box centre at L/2."""
    centre = 0.5 * (positions.max(axis=0) + positions.min(axis=0))
    return np.round(L / 2 - centre, 3)


def waters_for_edge(L_min: float) -> int:
    """Fewest waters whose cell at build_water's density has an edge >= L_min."""
    n = max(1, int(DENSITY_G_CM3 * (L_min * 1e-8) ** 3 * AVOGADRO / M_WATER))
    while round(build_water.cell_edge(n), 3) < L_min:
        n += 1
    return n


def water_box(n_waters: int, seed: int) -> tuple[np.ndarray, float, dict]:
    """build_water.build: n TIP3P waters equilibrated in their periodic cubic
    cell. Returns the waters (n, 3, 3) [O, H1, H2] in A, rounded to 0.001 A
    with every oxygen in [0, L), the edge L, and the run's energies."""
    build_water.SEED = seed  # build() seeds its velocities and integrator from SEED
    top, pos, L, info = build_water.build(n_waters)
    names = [[a.name for a in r.atoms()] for r in top.residues()]
    if names != [["O", "H1", "H2"]] * n_waters:
        raise RuntimeError("build_water.build did not return HOH residues O, H1, H2")
    waters = np.round(pos, 3).reshape(-1, 3, 3)
    waters -= np.floor(waters[:, :1] / L) * L  # an oxygen rounded onto L goes to 0
    return np.round(waters, 3), L, info


def exclusion_radii(elements: list[str], bonds: list[tuple[int, int]]) -> np.ndarray:
    """Per peptide atom: the oxygen-atom distance under which a water is
    dropped, as in Modeller.addSolvent: 2^(1/6)/2 (sigma_TIP3P-O + sigma_atom)."""
    partner = {}
    for i, j in bonds:
        partner.setdefault(i, elements[j])
        partner.setdefault(j, elements[i])
    kinds = [e if e != "H" else ("HC" if partner.get(i) == "C" else "HX") for i, e in enumerate(elements)]
    return np.array([VDW_RADIUS_PER_SIGMA * (SIGMA_TIP3P_O + SIGMA_SOLUTE[k]) for k in kinds])


def min_image(d: np.ndarray, L: float) -> np.ndarray:
    return d - L * np.round(d / L)


def water_peptide_distances(waters: np.ndarray, solute_pos: np.ndarray, L: float) -> np.ndarray:
    """(n_waters, 3, n_solute) minimum-image distances, A."""
    return np.linalg.norm(min_image(waters[:, :, None, :] - solute_pos[None, None], L), axis=3)


def carve(waters: np.ndarray, solute_pos: np.ndarray, radii: np.ndarray, heavy: np.ndarray,
          L: float) -> np.ndarray:
    """The waters that neither overlap the peptide (oxygen inside an exclusion
    radius) nor break the water-peptide contact limits, in their order."""
    d = water_peptide_distances(waters, solute_pos, L)
    overlaps = (d[:, 0] < radii[None]).any(axis=1)
    too_close = ((d[:, 0][:, heavy].min(axis=1) < MIN_O_TO_SOLUTE_HEAVY)
                 | (d.min(axis=(1, 2)) < MIN_WATER_TO_SOLUTE))
    return waters[~(overlaps | too_close)]


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def with_coordinates(record: str, xyz: np.ndarray) -> str:
    return f"{record[:30]}{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}{record[54:]}"


def conect_lines(bonds: list[tuple[int, int]], n_atoms: int, serial) -> list[str]:
    """CONECT records for `bonds` (indices), every bond listed from both ends,
    at most four partners a line; `serial` maps an index to its serial number."""
    partners: list[list[int]] = [[] for _ in range(n_atoms)]
    for i, j in bonds:
        partners[i].append(j)
        partners[j].append(i)
    lines = []
    for i in range(n_atoms):
        others = sorted(partners[i])
        for k in range(0, len(others), 4):
            lines.append(f"CONECT{serial(i):5d}" + "".join(f"{serial(j):5d}" for j in others[k:k + 4]))
    return lines


def write_box(path: str, peptide: Peptide, shift: np.ndarray, waters: np.ndarray, L: float,
              remarks: list[str]) -> None:
    n_pep, n_w = len(peptide.records), len(waters)
    if n_w > MAX_WATERS or n_pep + 1 + 3 * n_w > MAX_ATOMS:
        raise RuntimeError(f"{n_pep + 3 * n_w} atoms / {n_w} waters: too many for this PDB "
                           f"writer (<= {MAX_ATOMS} serials, <= {MAX_WATERS} water residues)")
    lines = [f"REMARK   1 {r}" for r in remarks] + peptide.remarks
    lines.append(f"CRYST1{L:9.3f}{L:9.3f}{L:9.3f}{90.0:7.2f}{90.0:7.2f}{90.0:7.2f} P 1           1")
    pep_pos = peptide.positions + shift
    lines += [with_coordinates(r, x) for r, x in zip(peptide.records, pep_pos)]
    last = peptide.records[-1]
    lines.append(f"TER   {n_pep + 1:5d}      {last[17:27]}".rstrip())
    # Serial numbers: the peptide's 1..n, TER n + 1, waters from n + 2.
    serial = lambda i: i + 1 if i < n_pep else i + 2  # noqa: E731
    for w, xyz in enumerate(waters):
        for k, name in enumerate(("O", "H1", "H2")):
            x, y, z = xyz[k]
            lines.append(
                f"HETATM{serial(n_pep + 3 * w + k):5d}  {name:<3s} HOH {WATER_CHAIN}{w + 1:4d}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{0.0:6.2f}          {name[0]:>2s}  "
            )
    bonds = peptide.bonds + water_bonds(n_pep, n_w)
    lines += conect_lines(bonds, n_pep + 3 * n_w, serial)
    lines.append("END")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def water_bonds(n_pep: int, n_w: int) -> list[tuple[int, int]]:
    return [(n_pep + 3 * w, n_pep + 3 * w + k) for w in range(n_w) for k in (1, 2)]


# ---------------------------------------------------------------------------
# Checking the written file
# ---------------------------------------------------------------------------


class CheckFailed(RuntimeError):
    pass


def check_box(path: str, peptide: Peptide, shift: np.ndarray, L: float, padding: float) -> dict:
    """Re-read `path` and check it (module docstring); raises CheckFailed.
    Returns the numbers for index.json."""
    with open(path) as f:
        records, serial_bonds, cryst1 = parse_records(f.read().splitlines())
    n_pep = len(peptide.records)
    n_w = check_cell_and_counts(cryst1, records, L, n_pep)
    index = serial_index(records)
    bonds = sorted((min(index[a], index[b]), max(index[a], index[b])) for a, b in serial_bonds)
    if bonds != peptide.bonds + water_bonds(n_pep, n_w):
        raise CheckFailed(f"{len(bonds)} bonds: not the input's {len(peptide.bonds)} plus 2 per water")
    elements = [r[76:78].strip() for r in records]
    if set(elements) - set(ELEMENTS):
        raise CheckFailed(f"elements {sorted(set(elements) - set(ELEMENTS))}")
    charge = sum(formal_charges(elements, bonds))
    if charge != 0:
        raise CheckFailed(f"net formal charge {charge:+d}")
    pos = coordinates(records)
    summary = {
        "atoms": len(records),
        "peptide_atoms": n_pep,
        "waters": n_w,
        "bonds": len(bonds),
        "net_formal_charge": charge,
        "density_g_cm3": round(box_density(elements, L), 4),
    }
    summary.update(check_peptide(records[:n_pep], pos[:n_pep], peptide, shift, L, padding))
    waters = pos[n_pep:].reshape(-1, 3, 3)
    summary.update(check_waters(records[n_pep:], waters, L))
    summary.update(check_contacts(waters, pos[:n_pep], np.array([e != "H" for e in peptide.elements]), L))
    check_openmm_reads(path, len(records), bonds, L)
    return summary


def check_cell_and_counts(cryst1: str | None, records: list[str], L: float, n_pep: int) -> int:
    """CRYST1 is the L cube; the atoms are the peptide's plus whole waters. Returns the water count."""
    if cryst1 is None:
        raise CheckFailed("no CRYST1 record")
    if [float(cryst1[k:k + 9]) for k in (6, 15, 24)] != [L] * 3 or cryst1[33:54].split() != ["90.00"] * 3:
        raise CheckFailed(f"CRYST1 {cryst1!r} is not a {L} A cube")
    n_w, rest = divmod(len(records) - n_pep, 3)
    if rest or n_w < 1 or len(records) > MAX_ATOMS:
        raise CheckFailed(f"{len(records)} atoms: not {n_pep} peptide atoms plus whole waters")
    return n_w


def check_peptide(records: list[str], pos: np.ndarray, peptide: Peptide, shift: np.ndarray,
                  L: float, padding: float) -> dict:
    """The peptide's records are the input's, translated by `shift`, and `padding` from every face."""
    for r_in, r_out in zip(peptide.records, records):
        if r_in[:30] != r_out[:30] or r_in[54:] != r_out[54:]:
            raise CheckFailed(f"peptide record changed: {r_out!r}")
    moved = np.rint(pos * 1000) - np.rint(peptide.positions * 1000) - np.rint(shift * 1000)
    if np.any(moved != 0):
        raise CheckFailed("peptide coordinates are not the input's translated by the centring shift")
    min_face = float(min(pos.min(), (L - pos.max(axis=0)).min()))
    if min_face < padding - 0.001:
        raise CheckFailed(f"peptide {min_face:.3f} A from a face, padding {padding}")
    return {"peptide_min_distance_to_face": round(min_face, 3)}


def check_waters(records: list[str], waters: np.ndarray, L: float) -> dict:
    """Residues HOH with atoms O, H1, H2, rigid TIP3P geometry, oxygens in [0, L)."""
    for w in range(len(waters)):
        triple = records[3 * w:3 * w + 3]
        names = [r[12:16].strip() for r in triple]
        if names != ["O", "H1", "H2"] or any(r[17:20] != "HOH" for r in triple):
            raise CheckFailed(f"water {w + 1}: {names}")
    oh = np.linalg.norm(waters[:, 1:] - waters[:, :1], axis=2)
    cos = np.einsum("ij,ij->i", waters[:, 1] - waters[:, 0], waters[:, 2] - waters[:, 0]) / oh.prod(axis=1)
    angle = np.degrees(np.arccos(cos))
    if np.abs(oh - R_OH).max() > R_OH_TOL or np.abs(angle - HOH_DEG).max() > HOH_TOL_DEG:
        raise CheckFailed(f"water geometry: O-H {oh.min():.4f}..{oh.max():.4f} A, "
                          f"H-O-H {angle.min():.2f}..{angle.max():.2f} deg")
    if waters[:, 0].min() < 0 or waters[:, 0].max() >= L:
        raise CheckFailed("a water oxygen lies outside [0, L)")
    return {
        "oh_bond_min": round(float(oh.min()), 4),
        "oh_bond_max": round(float(oh.max()), 4),
        "hoh_angle_min_deg": round(float(angle.min()), 2),
        "hoh_angle_max_deg": round(float(angle.max()), 2),
    }


def check_contacts(waters: np.ndarray, solute: np.ndarray, heavy: np.ndarray, L: float) -> dict:
    """The contact limits, with minimum-image distances."""
    d = water_peptide_distances(waters, solute, L)
    o_heavy, w_solute = float(d[:, 0][:, heavy].min()), float(d.min())
    oo, ww = closest_water_contacts(waters, L)
    if (o_heavy < MIN_O_TO_SOLUTE_HEAVY or w_solute < MIN_WATER_TO_SOLUTE
            or oo < MIN_OO or ww < MIN_WATER_WATER):
        raise CheckFailed(f"close contacts: water O to peptide heavy atom {o_heavy:.3f} A, "
                          f"water to peptide {w_solute:.3f} A, O-O {oo:.3f} A, "
                          f"other atoms of two waters {ww:.3f} A")
    return {
        "closest_water_o_to_peptide_heavy": round(o_heavy, 3),
        "closest_water_to_peptide": round(w_solute, 3),
        "closest_oo": round(oo, 3),
        "closest_intermolecular_water_atoms": round(ww, 3),
    }


def closest_water_contacts(waters: np.ndarray, L: float) -> tuple[float, float]:
    """Closest O-O, and closest pair of atoms of different waters (minimum image)."""
    o = waters[:, 0]
    oo = ww = np.inf
    for i in range(len(o) - 1):
        roo = np.linalg.norm(min_image(o[i + 1:] - o[i], L), axis=1)
        oo = min(oo, roo.min())
        for j in np.nonzero(roo < 4.0)[0] + i + 1:  # atoms of waters farther apart are > 2 A apart
            ww = min(ww, np.linalg.norm(min_image(waters[i][:, None] - waters[j][None], L), axis=2).min())
    return float(oo), float(ww)


def check_openmm_reads(path: str, n_atoms: int, bonds: list[tuple[int, int]], L: float) -> None:
    """An independent reader, OpenMM's PDBFile (residue templates plus CONECT),
    sees the same atoms, bonds and cell."""
    top = app.PDBFile(path).topology
    box = top.getUnitCellDimensions().value_in_unit(unit.angstrom)
    omm_bonds = sorted(tuple(sorted((a.index, b.index))) for a, b in top.bonds())
    if top.getNumAtoms() != n_atoms or omm_bonds != bonds or not np.allclose(list(box), [L] * 3, atol=1e-6):
        raise CheckFailed(f"OpenMM reads {top.getNumAtoms()} atoms, {len(omm_bonds)} bonds, cell {box}")


def box_density(elements: list[str], L: float) -> float:
    """Mass density (g/cm^3) of the atoms in the L cube, OpenMM's element masses."""
    mass = sum(app.Element.getBySymbol(e).mass.value_in_unit(unit.dalton) for e in elements)
    return mass / AVOGADRO / (L * 1e-8) ** 3


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def relative(path: str) -> str:
    """`path` relative to the repository root (for provenance that does not depend on the checkout)."""
    return os.path.relpath(os.path.abspath(path), ROOT)


def update_index(index_path: str, entry: dict) -> None:
    """Replace the entry for entry["file"] in index_path (created if missing), sorted by file."""
    index = {"description": "Peptides in cubic periodic TIP3P water boxes, no ions "
                            "(python/solvate.py; systems/README.md, 'Solvated peptides')",
             "boxes": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index["boxes"] = json.load(f).get("boxes", [])
    index["boxes"] = sorted([b for b in index["boxes"] if b["file"] != entry["file"]] + [entry],
                            key=lambda b: b["file"])
    with open(index_path, "w") as f:
        f.write(json.dumps(index, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("peptide", help="input PDB: one frame, hydrogens, element column, CONECT, H/C/N/O")
    ap.add_argument("--padding", type=float, default=10.0,
                    help="smallest distance (A) from the peptide to a face of the cubic cell (default 10)")
    ap.add_argument("--out", required=True, help="output PDB; index.json next to it is updated")
    ap.add_argument("--seed", type=int, default=build_water.SEED,
                    help=f"seed of the water equilibration (default {build_water.SEED}, as systems/water/)")
    args = ap.parse_args(argv)
    if args.padding < MIN_PADDING:
        ap.error(f"--padding must be at least {MIN_PADDING} A (the peptide then stays more than "
                 "one 5.2 A ANI-1x cut-off from its periodic images)")

    try:
        peptide = read_peptide(args.peptide)
        charge = sum(formal_charges(peptide.elements, peptide.bonds))
    except ValueError as exc:
        print(f"solvate: {exc}", file=sys.stderr)
        return 1
    if charge != 0:
        print(f"solvate: {args.peptide} has net formal charge {charge:+d}. This builder adds no "
              "ions: ANI-1x covers only H, C, N and O, so Na+/Cl- counter-ions would be outside "
              "the model. Neutralise the peptide through its protonation states "
              "(as systems/peptides/ does) and solvate that.", file=sys.stderr)
        return 1

    n_box = waters_for_edge(minimum_edge(peptide.positions, args.padding))
    box_waters, L, run_info = water_box(n_box, args.seed)
    shift = centring_shift(peptide.positions, L)
    solute_pos = peptide.positions + shift
    heavy = np.array([e != "H" for e in peptide.elements])
    waters = carve(box_waters, solute_pos, exclusion_radii(peptide.elements, peptide.bonds), heavy, L)

    command = (f".venv/bin/python python/solvate.py {relative(args.peptide)} "
               f"--padding {args.padding:g} --out {relative(args.out)}"
               + (f" --seed {args.seed}" if args.seed != ap.get_default("seed") else ""))
    remarks = [
        f"generated by python/solvate.py with OpenMM {openmm.__version__}, NumPy {np.__version__}",
        f"command: {command}",
        f"{relative(args.peptide)} translated by ({shift[0]:.3f}, {shift[1]:.3f}, {shift[2]:.3f}) A, "
        f"otherwise unchanged; cubic cell {L:.3f} A, padding {args.padding:g} A",
        f"{len(waters)} TIP3P waters: python/build_water.py's {n_box}-water box (addSolvent, minimised, "
        f"5 ps NVT 300 K, seed {args.seed}), {n_box - len(waters)} overlapping the peptide removed",
        "no ions: net formal charge 0, elements H/C/N/O (ANI-1x); water oxygens in [0, L), molecules whole",
    ]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_box(args.out, peptide, shift, waters, L, remarks)
    try:
        summary = check_box(args.out, peptide, shift, L, args.padding)
    except CheckFailed as exc:
        print(f"solvate: FAIL: {args.out}: {exc}", file=sys.stderr)
        return 1

    entry = {
        "file": os.path.basename(args.out),
        "input": relative(args.peptide),
        "command": command,
        "padding_angstrom": args.padding,
        "cell_angstrom": L,
        "peptide_shift_angstrom": [float(s) for s in shift],
        **summary,
        "water_box_waters": n_box,
        "waters_removed": n_box - len(waters),
        "water": f"TIP3P, python/build_water.py recipe: addSolvent(numAdded={n_box}), cell at "
                 f"{DENSITY_G_CM3} g/cm^3, minimised, {build_water.EQUIL_STEPS} x 2 fs NVT Langevin "
                 f"300 K (seed {args.seed}), rigid TIP3P, PME 0.9 nm, CPU platform deterministic",
        **{f"water_box_{k}": round(v, 3) for k, v in run_info.items()},
        "tools": {"python": platform.python_version(), "openmm": openmm.__version__, "numpy": np.__version__},
    }
    update_index(os.path.join(os.path.dirname(os.path.abspath(args.out)), "index.json"), entry)
    print(json.dumps(entry), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
