"""Your own SMILES -> 3D SDF for `mlff-md screen` (the optional RDKit step;
systems/README.md, "Screening library").

    .venv/bin/pip install rdkit      # once; RDKit is not in python/requirements.txt
    .venv/bin/python python/smiles_to_sdf.py INPUT.smi OUTPUT.sdf[.gz]

INPUT.smi: one SMILES per line, optionally followed by a name (the rest
of the line; default line<N>); blank lines and lines starting with # are
skipped. Each molecule gets hydrogens and one ETKDGv3 conformer with a
fixed seed and is NOT minimised (the screen relaxes it with the ML
potential); the same input gives the same file. Records keep
the input order and carry the SD data items smiles and source_index (the
input line number). Unparsable SMILES and failed embeddings are reported
and skipped; charged molecules are kept (M  CHG lines). Exits 1 if nothing
could be written, 2 without RDKit.
"""

import argparse
import multiprocessing
import os
import sys

import smiles3d
from smiles3d import Chem


def record(item):
    """(line number, SMILES, name, seed) -> SDF record, or None if it fails."""
    line, smi, name, seed = item
    mol = smiles3d.embed(Chem.MolFromSmiles(smi), seed)
    return None if mol is None else smiles3d.sdf_record(mol, name, {"smiles": smi, "source_index": line})


def read_smi(path: str) -> list:
    items = []
    with open(path) as f:
        for n, text in enumerate(f, 1):
            fields = text.split(None, 1)
            if fields and not fields[0].startswith("#"):
                name = fields[1].strip() if len(fields) > 1 else f"line{n}"
                items.append((n, fields[0], name))
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="SMILES file, one per line, optional name column")
    ap.add_argument("output", help="SDF file to write (.sdf or .sdf.gz)")
    ap.add_argument("--seed", type=int, default=smiles3d.SEED, help="ETKDGv3 randomSeed")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    args = ap.parse_args()

    items = read_smi(args.input)
    with multiprocessing.Pool(args.jobs) as pool:
        records = pool.map(record, [item + (args.seed,) for item in items], chunksize=8)
    for (line, smi, name), rec in zip(items, records):
        if rec is None:
            print(f"{args.input}:{line}: skipped {name} ({smi}): unparsable or embedding failed",
                  file=sys.stderr)
    written = [r for r in records if r is not None]
    if not written:
        raise SystemExit(f"{args.input}: no molecule could be embedded; nothing written")
    smiles3d.write_sdf(args.output, written)
    print(f"{args.output}: {len(written)} records, {len(items) - len(written)} skipped")


if __name__ == "__main__":
    main()
