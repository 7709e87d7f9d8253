"""The Auto3D 2.3.1 wheel (isayevlab/Auto3D_pkg, MIT licence) on PyPI, the
source of the ANI-2xt (python/export_ani2xt.py) and AIMNet2
(python/export_aimnet2.py) weights.

    wheel_path()                              # .cache/auto3d/<wheel>, downloaded if needed
    read_member(member, sha, download=True)   # bytes of one file in the wheel, hash-checked

The wheel is fetched once with `pip download` into .cache/auto3d/ (git-ignored)
and its sha256 checked; nothing of Auto3D is installed or imported.
download=False (the check scripts): a missing or damaged wheel raises
FileNotFoundError instead of downloading.
"""

import hashlib
import os
import subprocess
import sys
import zipfile

from model_files import ROOT, sha256

CACHE = os.path.join(ROOT, ".cache", "auto3d")
WHEEL_NAME = "Auto3D-2.3.1-py3-none-any.whl"
WHEEL_REQ = "auto3d==2.3.1"
WHEEL_SHA256 = "bff5fbdd0d57b5a9d3d0d40ac4f6c10634cbc685c692a926c41e2e73f82a72f1"


def wheel_path() -> str:
    """The Auto3D wheel in .cache/auto3d/, downloaded (pip download) if absent or
    damaged; its sha256 is checked."""
    wheel = os.path.join(CACHE, WHEEL_NAME)
    if not os.path.isfile(wheel) or sha256(wheel) != WHEEL_SHA256:
        os.makedirs(CACHE, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
               WHEEL_REQ, "--no-deps", "--only-binary=:all:", "-d", CACHE]
        print("weights: " + " ".join(cmd[1:]))
        subprocess.run(cmd, check=True)
    digest = sha256(wheel) if os.path.isfile(wheel) else None
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}")
    return wheel


def read_member(member: str, expected_sha256: str, download: bool = True) -> bytes:
    """The bytes of `member` of the wheel, checked against `expected_sha256`."""
    wheel = os.path.join(CACHE, WHEEL_NAME)
    if download:
        wheel = wheel_path()
    elif not os.path.isfile(wheel) or sha256(wheel) != WHEEL_SHA256:
        raise FileNotFoundError(
            f"{os.path.relpath(wheel, ROOT)} missing or not sha256 {WHEEL_SHA256} "
            "(python/export_ani.py downloads it; `make test` runs it)")
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise SystemExit(f"{member}: sha256 {digest}, expected {expected_sha256}")
    return data
