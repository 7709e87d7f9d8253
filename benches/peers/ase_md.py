#!/usr/bin/env python3
"""Peer benchmark: ASE Langevin MD with the TorchScript model, replicas ONE AT A TIME.

This is the "seed baseline": the usual way to run R independent replicas with an
ML potential in ASE -- one Atoms object, one calculator call (forward + backward
for a single molecule) and one ase.md.langevin.Langevin per replica, replicas
run one after the other. Every MD step costs one model call and one
device->host copy of the forces.

Settings: 0.5 fs, 300 K, friction 0.01 / fs (= 10 / ps) in ASE units
(0.01 / ase.units.fs), fixcm=False, float32 positions to the model,
float64 state (ASE's numpy arrays).

Timing: every replica first runs --warmup untimed steps (this also does its
initial force call and warms the TorchScript profiling executor); then the
replicas run --steps steps each, one after the other, inside one timed region
(torch.cuda.synchronize before each clock read).

    python3 benches/peers/ase_md.py --model models/ani1x.pt \
        --structure systems/peptides/alanine_dipeptide.pdb \
        --replicas 8 --steps 1000 --warmup 20 --device cuda --out ase.json
"""

from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import _common as C  # noqa: E402

import ase  # noqa: E402
import ase.io  # noqa: E402
from ase import units  # noqa: E402
from ase.calculators.calculator import Calculator, all_changes  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta  # noqa: E402
except ImportError:  # older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: E402

    def thermalize_momenta(atoms, temperature_K, *, rng=None):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


class TorchScriptCalculator(Calculator):
    """ASE calculator around a mlff-md TorchScript model, one molecule per call.

    forward(atomic_numbers int64[N], positions float32[N,3] Å, batch int64[N])
        -> energies float64[1] eV; forces = -dE/dpositions (autograd).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model: torch.jit.ScriptModule, device: torch.device, **kw):
        super().__init__(**kw)
        self.model = model
        self.device = device
        self._key = None
        self._z = None
        self._batch = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        z = self.atoms.numbers
        key = (len(z), z.tobytes())
        if key != self._key:  # cache the per-molecule index tensors
            self._z = torch.as_tensor(z, dtype=torch.int64, device=self.device)
            self._batch = torch.zeros(len(z), dtype=torch.int64, device=self.device)
            self._key = key
        pos = torch.as_tensor(self.atoms.positions, dtype=torch.float32).to(self.device)
        pos.requires_grad_(True)
        energy = self.model(self._z, pos, self._batch)
        (grad,) = torch.autograd.grad(energy.sum(), pos)
        e = float(energy.detach().sum().item())
        self.results["energy"] = e
        self.results["free_energy"] = e
        self.results["forces"] = (-grad).detach().to("cpu", torch.float64).numpy()


def main() -> None:
    args = C.parse_args("ASE Langevin, replicas one at a time")
    device = torch.device(args.device)
    model = C.load_model(args.model, device)
    template = ase.io.read(args.structure)
    template.pbc = False

    replicas = []
    for r in range(args.replicas):
        atoms = template.copy()
        atoms.calc = TorchScriptCalculator(model, device)
        rng = np.random.default_rng(args.seed + r)
        thermalize_momenta(atoms, temperature_K=C.TEMPERATURE_K, rng=rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            dyn = Langevin(
                atoms,
                timestep=C.TIMESTEP_FS * units.fs,
                temperature_K=C.TEMPERATURE_K,
                friction=C.FRICTION_PER_FS / units.fs,
                fixcm=False,
                rng=rng,
            )
        replicas.append((atoms, dyn))

    # Warm-up: every replica, untimed (initial force call + executor warm-up).
    for atoms, dyn in replicas:
        if args.warmup > 0:
            dyn.run(args.warmup)
        else:
            atoms.get_forces()

    t0 = C.clock(device)
    for atoms, dyn in replicas:  # replicas one after the other
        dyn.run(args.steps)
    t1 = C.clock(device)

    temps = [atoms.get_temperature() for atoms, _ in replicas]
    result = {
        "engine": "ase",
        "version": ase.__version__,
        "ase_version": ase.__version__,
        "device": str(device),
        "device_name": C.device_name(device),
        "model": os.path.basename(args.model),
        "structure": os.path.basename(args.structure),
        "atoms_per_replica": len(template),
        "integrator": "ase.md.langevin.Langevin (fixcm=False), replicas run sequentially",
        "model_positions_dtype": "float32",
        "state_dtype": "float64 (numpy)",
        "batching": "none: one model call (forward+backward) per replica per step",
    }
    C.finish(result, args, t1 - t0, temps)


if __name__ == "__main__":
    main()
