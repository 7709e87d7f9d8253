"""Shared helpers for the peer-engine benchmarks (ase_md.py, torchsim_md.py,
and stub_tables() also for ../torchsim_screen.py).

Nothing here is engine specific: CLI, device handling, clocks, JSON output,
and the PyTables stand-in that lets torch_sim import without PyTables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
import types

import numpy as np
import torch

# Simulation settings shared by both peers (and matching the mlff-md runs).
TIMESTEP_FS = 0.5
TEMPERATURE_K = 300.0
FRICTION_PER_FS = 0.01  # = 10 / ps
FRICTION_PER_PS = FRICTION_PER_FS * 1000.0


def stub_tables() -> bool:
    """Let `import torch_sim` (0.6.2) work without PyTables; call before importing it.

    torch_sim.trajectory imports PyTables at import time, but only trajectory
    files (TorchSimTrajectory / TrajectoryReporter) use it; the benchmarks never
    write them. If `tables` cannot be imported, a stub module takes its place in
    sys.modules: any attribute is a do-nothing class (torch_sim.trajectory
    builds tables.Float32Atom() etc. at import time) and tables.open_file
    raises. Returns True when the stub was installed (record it in the JSON),
    False when a real PyTables is there (it is then used).
    """
    try:
        import tables  # noqa: F401
        return False
    except ImportError:
        pass
    stub = types.ModuleType("tables")

    def _placeholder(name: str) -> type:
        if name.startswith("__"):  # __path__, __file__, ...: plain module lookups fail
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})

    def _open_file(*a, **k):
        raise RuntimeError("PyTables is not installed (stubbed by benches/peers/_common.py)")

    stub.open_file = _open_file
    stub.__getattr__ = _placeholder  # module-level __getattr__ (PEP 562)
    sys.modules["tables"] = stub
    return True


def parse_args(description: str, extra=None) -> argparse.Namespace:
    """Shared CLI; `extra(parser)` may add engine-specific options."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", required=True, help="TorchScript model (.pt)")
    p.add_argument("--structure", required=True, help="PDB/XYZ file readable by ase.io.read")
    p.add_argument("--replicas", type=int, default=1, help="number of replicas R")
    p.add_argument("--steps", type=int, default=1000, help="timed MD steps per replica")
    p.add_argument("--warmup", type=int, default=20, help="untimed MD steps per replica before timing")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="write the result JSON here (also printed)")
    if extra is not None:
        extra(p)
    a = p.parse_args()
    if a.replicas < 1 or a.steps < 1 or a.warmup < 0:
        p.error("need --replicas >= 1, --steps >= 1, --warmup >= 0")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    return a


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """Wall clock after draining the device queue."""
    sync(device)
    return time.perf_counter()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def load_model(path: str, device: torch.device) -> torch.jit.ScriptModule:
    model = torch.jit.load(path, map_location=device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def finish(result: dict, args: argparse.Namespace, wall_s: float, temps_k) -> dict:
    """Add the throughput fields common to both peers and write/print JSON."""
    replica_steps = args.replicas * args.steps
    rs_per_s = replica_steps / wall_s
    ns_day = rs_per_s * TIMESTEP_FS * 86400.0 / 1.0e6
    temps = [float(t) for t in temps_k]
    result.update(
        {
            "replicas": args.replicas,
            "steps": args.steps,
            "warmup": args.warmup,
            "wall_seconds": wall_s,
            "replica_steps_per_second": rs_per_s,
            "steps_per_second": args.steps / wall_s,
            "aggregate_ns_per_day": ns_day,
            "ns_per_day_per_replica": ns_day / args.replicas,
            "mean_temperature_k": float(np.mean(temps)),
            "final_temperatures_k": temps if len(temps) <= 64 else None,
            "timestep_fs": TIMESTEP_FS,
            "temperature_k": TEMPERATURE_K,
            "friction_per_fs": FRICTION_PER_FS,
            "friction_per_ps": FRICTION_PER_PS,
            "seed": args.seed,
            "python_version": sys.version.split()[0],
            "numpy_version": np.__version__,
            "torch_version": torch.__version__,
        }
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


def sha256(path: str) -> str:
    """SHA-256 of a file's contents, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
