"""SMILES -> 3D structures as V2000 SDF records, for `mlff-md screen` inputs
(python/build_screen_library.py, python/smiles_to_sdf.py).

    mol = embed(Chem.MolFromSmiles(smiles), seed)   # all-H, ETKDGv3 coordinates, or None
    text = sdf_record(mol, title, {"smiles": smiles})
    write_sdf(path, records)                         # .gz: byte-reproducible gzip

The structures are ETKDGv3 embeddings only, deliberately not force-field
minimised: relaxing them with the ML potential (the screen's FIRE
minimisation) is the workload being screened. One conformer per molecule,
from a fixed seed, on one thread, so the coordinates depend only on the
SMILES, the seed and the RDKit version, not on the process that made them.

RDKit is optional for the project (not in python/requirements.txt): without
it, importing this module exits with status 2 and says how to install it.
"""

import gzip
import io
import sys
from typing import Iterable, Mapping, Optional

try:
    from rdkit import Chem
    from rdkit.Chem import AllChem
except ImportError:
    sys.stderr.write("RDKit is not installed; install it into the project's venv with\n"
                     "    .venv/bin/pip install rdkit\n")
    raise SystemExit(2)

SEED = 20261126  # the seed of every other generated structure in systems/


def embed(mol: Optional[Chem.Mol], seed: int = SEED) -> Optional[Chem.Mol]:
    """`mol` with explicit hydrogens and one ETKDGv3 conformer, or None if
    `mol` is None (an unparsable SMILES) or the embedding fails."""
    if mol is None:
        return None
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.numThreads = 1
    return mol if AllChem.EmbedMolecule(mol, params) == 0 else None


def sdf_record(mol: Chem.Mol, title: str, data: Mapping[str, object]) -> str:
    """One V2000 SDF record ending in `$$$$`: title line `title`, then the SD
    data items `data` in the given order."""
    mol = Chem.Mol(mol)
    mol.SetProp("_Name", title)
    items = "".join(f"> <{key}>\n{value}\n\n" for key, value in data.items())
    return Chem.MolToMolBlock(mol, forceV3000=False) + items + "$$$$\n"


def write_sdf(path: str, records: Iterable[str]) -> str:
    """Write the records to `path` (gzip if it ends in .gz, with no name or
    time stamp in the header so equal text gives equal bytes); returns the text."""
    text = "".join(records)
    data = text.encode()
    if path.endswith(".gz"):
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
            gz.write(data)
        data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return text
