"""Byte-reproducible TorchScript files and their committed SHA-256 sums.

The exported ANI models (models/ani1x.pt, ...) are build products, not
committed; models/SHA256SUMS (`sha256sum -c` format) holds the hash each
export must reproduce. `torch.jit.save` alone is not reproducible: it writes a
random .data/serialization_id, and the .debug_pkl records hold the absolute
paths of the Python sources. `canonical_archive` rewrites the archive
deterministically: the same records in the same order without the optional
.debug_pkl ones (source ranges for TorchScript tracebacks; the code, constants
and tensors are all kept), a serialization_id derived from the content, a
fixed record prefix, every record stored (uncompressed, so no dependence on the
zlib build) at a 64-byte aligned offset as torch writes them, fixed timestamps.

    save_canonical(scripted, prefix) -> bytes
    install(data, dest, sums, update)   # hash-checked, atomic; raises HashMismatch
"""

import hashlib
import io
import os
import struct
import tempfile
import zipfile
import zlib
from typing import Dict, List, Tuple

import torch

from pypi_archive import file_sha256

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(ROOT, "models")
SUMS_PATH = os.path.join(MODELS_DIR, "SHA256SUMS")

ALIGN = 64  # torch's kFieldAlignment: record data starts at a multiple of 64
DOS_DATE = (1 << 5) | 1  # 1980-01-01, time 00:00:00


class HashMismatch(Exception):
    pass


def show(path: str) -> str:
    """`path` relative to the repository root if it is inside it."""
    rel = os.path.relpath(os.path.abspath(path), ROOT)
    return path if rel.startswith("..") else rel


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# One file hash for every script (pypi_archive.py needs only the standard library).
sha256 = file_sha256


def _zip_stored(records: List[Tuple[str, bytes]]) -> bytes:
    """A plain zip of uncompressed records, each record's data 64-byte aligned
    (padding in a local-header extra field with id "FB", as torch pads)."""
    out = bytearray()
    central = bytearray()
    for name, data in records:
        raw = name.encode("ascii")
        crc = zlib.crc32(data)
        offset = len(out)
        pad = -(offset + 30 + len(raw)) % ALIGN
        if 0 < pad < 4:
            pad += ALIGN
        extra = b"FB" + struct.pack("<H", pad - 4) + b"Z" * (pad - 4) if pad else b""
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, DOS_DATE, crc,
                           len(data), len(data), len(raw), len(extra))
        out += raw + extra + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, DOS_DATE,
                               crc, len(data), len(data), len(raw), 0, 0, 0, 0, 0, offset)
        central += raw
    cd_offset = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records),
                       len(central), cd_offset, 0)
    return bytes(out)


def canonical_archive(data: bytes, prefix: str) -> bytes:
    """`data` (a TorchScript zip) rewritten deterministically (module docstring)."""
    records = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            name = info.filename
            rel = name.split("/", 1)[1]
            if rel.endswith(".debug_pkl") or rel == ".data/serialization_id":
                continue
            records.append((f"{prefix}/{rel}", zf.read(info)))
    h = hashlib.sha256()
    for name, body in records:
        h.update(name.encode() + b"\0" + struct.pack("<Q", len(body)) + body)
    # torch's ids are 40 decimal digits
    sid = str(int.from_bytes(h.digest()[:16], "big")).zfill(40)[-40:]
    records.append((f"{prefix}/.data/serialization_id", sid.encode()))
    return _zip_stored(records)


def save_canonical(scripted: torch.jit.ScriptModule, prefix: str) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    return canonical_archive(buf.getvalue(), prefix)


def read_sums(path: str = SUMS_PATH) -> Dict[str, str]:
    """file name -> sha256 from models/SHA256SUMS (empty if absent)."""
    sums = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    digest, name = line.split(None, 1)
                    sums[name.strip().lstrip("*")] = digest
    return sums


def update_sums(new: Dict[str, str], path: str = SUMS_PATH) -> None:
    sums = read_sums(path)
    sums.update(new)
    with open(path, "w") as f:
        for name in sorted(sums):
            f.write(f"{sums[name]}  {name}\n")


def up_to_date(path: str, sums: Dict[str, str]) -> bool:
    """`path` exists and has the sha256 that SHA256SUMS lists for its name."""
    expected = sums.get(os.path.basename(path))
    return expected is not None and os.path.isfile(path) and sha256(path) == expected


def write_atomic(data: bytes, dest: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".",
                               suffix=".tmp", dir=os.path.dirname(dest))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def install(data: bytes, dest: str, sums: Dict[str, str], update: bool) -> str:
    """Write `data` to `dest` if its sha256 is the one SHA256SUMS lists for
    dest's name (or `update`: any hash, returned for SHA256SUMS); leave an
    identical file untouched. Returns the sha256; raises HashMismatch (dest is
    left as it was) otherwise."""
    name = os.path.basename(dest)
    digest = sha256_bytes(data)
    expected = sums.get(name)
    if not update and digest != expected:
        rel = show(SUMS_PATH)
        raise HashMismatch(
            f"{show(dest)}: the export has sha256 {digest}, "
            f"{rel} expects {expected or '(no entry)'}; the file was not written. "
            f"The export is not reproducing the committed model (different torch/torchani "
            f"version or weights?). If the change is intended, run "
            f"`.venv/bin/python python/export_ani.py --update-hashes` and commit {rel}.")
    if os.path.isfile(dest) and sha256(dest) == digest:
        print(f"unchanged {show(dest)} (sha256 {digest[:16]}...)")
    else:
        write_atomic(data, dest)
        print(f"wrote {show(dest)} ({len(data):,} bytes, sha256 {digest[:16]}...)")
    return digest
