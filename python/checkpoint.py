"""Reading mlff-md checkpoints (checkpoint.bin) from Python, for analysis and
for checks that must not trust the engine's own arithmetic.

Layout (little endian, see src/io/checkpoint.rs): b"MLFFMDCK", format
version (u32), header length (u64), JSON header, then positions, velocities,
forces ([R*N*3] float64 each) and energies ([R] float64), then the SHA-256
of everything before it.

    ck = read("out/run/checkpoint.bin")
    ck["header"]["step"], ck["velocities"].shape   # (R, N, 3), Å/fs
"""

import hashlib
import json
import struct

import numpy as np

MAGIC = b"MLFFMDCK"


def read(path: str) -> dict:
    """Header (dict) and state arrays of a checkpoint; raises ValueError if
    the file is not one or its checksum does not match."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 52 or data[:8] != MAGIC:
        raise ValueError(f"{path}: not an mlff-md checkpoint")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError(f"{path}: checksum mismatch")
    (version,) = struct.unpack_from("<I", body, 8)
    (header_len,) = struct.unpack_from("<Q", body, 12)
    header = json.loads(body[20:20 + header_len])
    r, n = header["n_members"], header["n_atoms"]
    arrays = np.frombuffer(body[20 + header_len:], dtype="<f8")
    rows = r * n * 3
    if arrays.size != 3 * rows + r:
        raise ValueError(f"{path}: state arrays have {arrays.size} values, expected {3 * rows + r}")
    shape = (r, n, 3)
    return {
        "version": version,
        "header": header,
        "positions": arrays[:rows].reshape(shape),
        "velocities": arrays[rows:2 * rows].reshape(shape),
        "forces": arrays[2 * rows:3 * rows].reshape(shape),
        "energies": arrays[3 * rows:],
    }
