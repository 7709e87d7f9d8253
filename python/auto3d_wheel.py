"""The Auto3D 2.3.1 wheel (isayevlab/Auto3D_pkg, MIT licence) on PyPI, the
source of the ANI-2xt (python/export_ani2xt.py) and AIMNet2
(python/export_aimnet2.py) weights.

    wheel_path()                              # .cache/auto3d/<wheel>, downloaded if needed
    read_member(member, sha, download=True)   # bytes of one file in the wheel, hash-checked

The wheel is fetched once with `pip download` into .cache/auto3d/ (git-ignored)
and its sha256 checked (python/pypi_archive.py); nothing of Auto3D is
installed or imported. download=False (the check scripts): a missing or
damaged wheel raises FileNotFoundError instead of downloading.
"""

import os

import pypi_archive
from model_files import ROOT

CACHE = os.path.join(ROOT, ".cache", "auto3d")
WHEEL_NAME = "Auto3D-2.3.1-py3-none-any.whl"
WHEEL_REQ = "auto3d==2.3.1"
WHEEL_SHA256 = "bff5fbdd0d57b5a9d3d0d40ac4f6c10634cbc685c692a926c41e2e73f82a72f1"


def wheel_path() -> str:
    """The Auto3D wheel in .cache/auto3d/, downloaded (pip download) if absent or
    damaged; its sha256 is checked."""
    return pypi_archive.fetch(WHEEL_REQ, WHEEL_NAME, WHEEL_SHA256, CACHE, label="weights")


def read_member(member: str, expected_sha256: str, download: bool = True) -> bytes:
    """The bytes of `member` of the wheel, checked against `expected_sha256`."""
    if download:
        wheel = wheel_path()
    elif pypi_archive.cached(WHEEL_NAME, WHEEL_SHA256, CACHE):
        wheel = os.path.join(CACHE, WHEEL_NAME)
    else:
        raise FileNotFoundError(
            f"{os.path.relpath(os.path.join(CACHE, WHEEL_NAME), ROOT)} missing or not sha256 "
            f"{WHEEL_SHA256} (python/export_ani.py downloads it; `make test` runs it)")
    return pypi_archive.read_member(wheel, member, expected_sha256)
