"""Atoms and periodic cell of a PDB file with a CRYST1 record, for the checks
that call models on periodic boxes (python/check_ani.py, python/check_sevenn.py),
and the atoms alone of any PDB file (python/export_pt2.py).

    z, x, cell = read_pdb_box(path, {"H": 1, "O": 8})
    z, x = read_pdb_atoms(path, {"H": 1, "O": 8})
"""

import math
from typing import Dict, List, Tuple

import torch


def read_pdb_box(path: str, symbols: Dict[str, int]) -> Tuple[List[int], List[List[float]], torch.Tensor]:
    """Atomic numbers (the element columns 77-78 through `symbols`),
    positions (A) and the cell: rows a, b, c in the lower-triangular form
    (a along x, b in the xy plane), float64 [3, 3], from a, b, c, alpha,
    beta, gamma of CRYST1. A file without CRYST1 is an error."""
    z, x, par = _read_pdb(path, symbols)
    if par is None:
        raise AssertionError(f"{path} has no CRYST1 record")
    a, b, c = par[:3]
    al, be, ga = (math.radians(v) for v in par[3:])
    cx = c * math.cos(be)
    cy = c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    cell = torch.tensor([[a, 0.0, 0.0], [b * math.cos(ga), b * math.sin(ga), 0.0],
                         [cx, cy, math.sqrt(c * c - cx * cx - cy * cy)]], dtype=torch.float64)
    return z, x, cell


def read_pdb_atoms(path: str, symbols: Dict[str, int]) -> Tuple[List[int], List[List[float]]]:
    """Atomic numbers (the element columns 77-78 through `symbols`; an
    element not in it is an error naming it) and positions (A) of the ATOM
    and HETATM records."""
    z, x, _ = _read_pdb(path, symbols)
    return z, x


def _read_pdb(path: str, symbols: Dict[str, int]):
    """Atomic numbers, positions and the CRYST1 parameters (a, b, c, alpha,
    beta, gamma; None without the record), in one pass over the file."""
    z, x, par = [], [], None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.startswith("CRYST1"):
                par = [float(line[i:i + w]) for i, w in
                       [(6, 9), (15, 9), (24, 9), (33, 7), (40, 7), (47, 7)]]
            elif line.startswith(("ATOM", "HETATM")):
                x.append([float(line[30:38]), float(line[38:46]), float(line[46:54])])
                symbol = line[76:78].strip()
                if symbol not in symbols:
                    raise SystemExit(f"{path}:{n}: element {symbol!r} (columns 77-78) is not one of {sorted(symbols)}")
                z.append(symbols[symbol])
    return z, x, par
