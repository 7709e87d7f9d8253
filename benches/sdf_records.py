"""A small MDL SDF (V2000) reader for the bench scripts, without RDKit.

Reads `.sdf` or gzip-compressed `.sdf.gz` text (gzip is recognised by its
magic bytes, whatever the file name) and yields one `Record` per molecule:
title, atomic numbers, coordinates (Å), net formal charge and the record's
own text (for cutting sub-libraries). Formal charges are taken from the
`M  CHG` lines when a record has any (they supersede the atom block, as in
the V2000 specification and in mlff-md's reader, src/screen/sdf.rs), else
from the atom block's charge codes (1 = +3 ... 7 = -3; 4 is a doublet
radical, no charge).

Unlike mlff-md's reader, which skips a broken record and reports it, every
problem here raises `SdfError` naming the file and line: a benchmark must
not silently drop molecules. Bonds and SD data items are not parsed.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from typing import Iterator

# Index = atomic number.
_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn "
    "Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce "
    "Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn "
    "Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl "
    "Mc Lv Ts Og"
).split()
ATOMIC_NUMBER = {s: z for z, s in enumerate(_SYMBOLS) if z > 0}
SYMBOL = dict(enumerate(_SYMBOLS))

_ATOM_BLOCK_CHARGE = {1: 3, 2: 2, 3: 1, 5: -1, 6: -2, 7: -3}


class SdfError(ValueError):
    """A record that cannot be read (file and 1-based line in the message)."""


@dataclass
class Record:
    index: int  # 0-based position of the record in the file
    first_line: int  # 1-based line of the record's title
    name: str
    numbers: list[int]
    positions: list[tuple[float, float, float]]
    charge: int  # net formal charge
    text: str  # the record's lines, ending with "$$$$\n"

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def elements(self) -> set[int]:
        return set(self.numbers)


def open_text(path: str):
    """Text stream of an SDF file, gunzipped if it starts with gzip's magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", newline=None)
    return open(path, "r", encoding="utf-8", newline=None)


def _int(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SdfError(f"{where}: {what} {text.strip()!r} is not an integer") from None


def _parse(lines: list[str], index: int, first_line: int, path: str) -> Record:
    def where(k: int) -> str:
        return f"{path}:{first_line + k}"

    if len(lines) < 4:
        raise SdfError(f"{where(0)}: record {index} has {len(lines)} lines, no counts line")
    name = lines[0].strip()
    counts = lines[3]
    if "V3000" in counts:
        raise SdfError(f"{where(3)}: a V3000 molfile; only V2000 records are read")
    n_atoms = _int(counts[0:3], "atom count", where(3))
    n_bonds = _int(counts[3:6], "bond count", where(3))
    if n_atoms <= 0:
        raise SdfError(f"{where(3)}: record {index} ({name!r}) has no atoms")
    if len(lines) < 4 + n_atoms + n_bonds:
        raise SdfError(
            f"{where(3)}: counts line says {n_atoms} atoms and {n_bonds} bonds, "
            f"the record has only {len(lines) - 4} lines after it"
        )
    numbers, positions, charges = [], [], []
    for k in range(4, 4 + n_atoms):
        line = lines[k]
        if line.startswith("M  "):
            raise SdfError(f"{where(k)}: expected an atom line, found {line.rstrip()!r}")
        try:
            xyz = (float(line[0:10]), float(line[10:20]), float(line[20:30]))
        except ValueError:
            raise SdfError(f"{where(k)}: bad coordinates in {line.rstrip()!r}") from None
        symbol = line[31:34].strip()
        if symbol not in ATOMIC_NUMBER:
            raise SdfError(f"{where(k)}: unknown element {symbol!r}")
        numbers.append(ATOMIC_NUMBER[symbol])
        positions.append(xyz)
        code = line[36:39].strip()
        charges.append(_ATOM_BLOCK_CHARGE.get(_int(code, "charge code", where(k)), 0) if code else 0)
    ended = False
    chg_seen = False
    for k in range(4 + n_atoms + n_bonds, len(lines)):
        line = lines[k]
        if line.startswith("M  END"):
            ended = True
            break
        if line.startswith("M  CHG"):
            if not chg_seen:  # the first M  CHG line supersedes the atom block
                charges = [0] * n_atoms
                chg_seen = True
            fields = line[6:].split()
            count = _int(fields[0] if fields else "", "M  CHG count", where(k))
            if len(fields) != 1 + 2 * count:
                raise SdfError(f"{where(k)}: malformed {line.rstrip()!r}")
            for j in range(count):
                atom = _int(fields[1 + 2 * j], "M  CHG atom", where(k))
                if not 1 <= atom <= n_atoms:
                    raise SdfError(f"{where(k)}: M  CHG names atom {atom}, the record has {n_atoms}")
                charges[atom - 1] = _int(fields[2 + 2 * j], "M  CHG charge", where(k))
    if not ended:
        raise SdfError(f"{where(0)}: record {index} ({name!r}) has no 'M  END' line")
    charge = sum(charges)
    return Record(index, first_line, name, numbers, positions, charge, "".join(x + "\n" for x in lines) + "$$$$\n")


def read_records(path: str) -> Iterator[Record]:
    """Every record of the file, in order; raises SdfError at the first broken one."""
    lines: list[str] = []
    first_line = 1
    index = 0
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.rstrip() == "$$$$":
                yield _parse(lines, index, first_line, path)
                index += 1
                lines = []
                first_line = lineno + 1
            else:
                lines.append(line)
    if any(x.strip() for x in lines):
        yield _parse(lines, index, first_line, path)
