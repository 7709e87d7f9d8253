"""Imports that a check needs: a missing dependency fails the check with a
clear message instead of skipping it.

    h5py = require("h5py", "check_outputs")
"""

import importlib


def require(module: str, check: str):
    """The imported module; exits 1 naming `module` and `check` if it does not import."""
    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise SystemExit(
            f"{check}: FAIL: cannot import {module} ({type(exc).__name__}: {exc}); "
            f"`make setup` installs it into .venv (run with .venv/bin/python)")
