"""Wrap a third-party model (PyG SchNet, random weights) into the mlff-md v1 contract and save it.

    forward(atomic_numbers int64[N], positions float[N, 3] (Å), batch int64[N]) -> energies [S] (eV)

    python python/wrap_schnet_example.py target/release/mlff-md [--keep OUT.pt]

Run by `make test` (models/README.md, "Wrapping your own model"): exports the wrapped model to a
temporary file (or OUT.pt), checks it in Python, then has the engine inspect it and run 100
Langevin steps of ethanol with it; the first recorded energy must equal the Python one. Needs
torch_geometric (make setup installs it); the saved file does not.

1. Build the model: torch_geometric's SchNet takes (z, pos, batch) and sums atomic energies per
   structure. Its weights are random (torch.manual_seed(0)): the energies are not physical. For a
   trained model, load its state_dict instead; it must give eV from Å (or convert in forward).
2. Neighbours: SchNet's default interaction graph calls radius_graph, which needs the compiled
   pyg-lib extension (not on PyPI). AllPairsGraph finds every pair i != j of one structure closer
   than the cutoff in plain torch: scriptable, any atom order, O(N^2) memory (fine for molecules).
   SchNet's cosine cutoff takes the filter and its slope to 0 at the cutoff, so pairs entering or
   leaving the list during MD change neither the energy nor the forces abruptly.
3. Make it scriptable: CFConv reads the module global PI, which TorchScript cannot, and
   SchNet.forward has dipole and Optional branches that do not script. CFConvTS (same weights) uses
   math.pi, and SchNetV1 repeats SchNet's energy path with its submodules.
4. Contract: SchNetV1 raises for elements outside supported_elements(), computes in float32 (float64
   positions are cast, the gradient flows back in their dtype), returns float64 energies [S] and
   exports metadata() (JSON). torch.jit.script, not trace: the pair count changes with geometry.
5. Check the saved file: (a) energies = the eager, unmodified SchNet on ethanol + water in one batch,
   (b) each molecule alone = the batch (also with shuffled, interleaved atoms), (c) autograd forces
   are finite and match a central difference. mlff-md inspect OUT.pt then checks it as a run would,
   and a 100-step run uses it.
"""
import argparse
import copy
import json
import math
import os
import subprocess
import tempfile
from typing import List, Tuple

from deps import require

torch = require("torch", "wrap_schnet_example")
h5py = require("h5py", "wrap_schnet_example")
require("torch_geometric", "wrap_schnet_example")
from torch_geometric.nn.models import SchNet  # noqa: E402
from torch_geometric.nn.models.schnet import CFConv  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CUTOFF = 5.0  # Å


class AllPairsGraph(torch.nn.Module):
    """Drop-in for SchNet's interaction_graph: all pairs of a structure within the cutoff."""
    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = cutoff

    def forward(self, pos: torch.Tensor, batch: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n = pos.shape[0]
        same = (batch.unsqueeze(0) == batch.unsqueeze(1)) & ~torch.eye(n, dtype=torch.bool, device=pos.device)
        d2 = (pos.detach().unsqueeze(0) - pos.detach().unsqueeze(1)).pow(2).sum(-1)
        edge_index = (same & (d2 < self.cutoff ** 2)).nonzero().t()  # [2, E], both directions
        row, col = edge_index[0], edge_index[1]
        return edge_index, (pos[row] - pos[col]).pow(2).sum(-1).sqrt()  # differentiable, i != j


class CFConvTS(CFConv):
    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        C = 0.5 * (torch.cos(edge_weight * math.pi / self.cutoff) + 1.0)
        W = self.nn(edge_attr) * C.view(-1, 1)
        return self.lin2(self.propagate(edge_index, x=self.lin1(x), W=W))


class SchNetV1(torch.nn.Module):
    def __init__(self, model: SchNet, elements: List[int], meta: str):
        super().__init__()
        assert not model.dipole and model.scale is None, "energy models only"
        m = copy.deepcopy(model)
        for block in m.interactions:  # same weights and filter MLP, scriptable forward
            c = block.conv
            block.conv = CFConvTS(c.lin1.in_features, c.lin2.out_features, c.lin1.out_features, c.nn, c.cutoff)
            block.conv.load_state_dict(c.state_dict())
        self.embedding, self.graph, self.rbf = m.embedding, m.interaction_graph, m.distance_expansion
        self.interactions, self.lin1, self.act, self.lin2 = m.interactions, m.lin1, m.act, m.lin2
        self.readout = m.readout
        has_std = m.mean is not None and m.std is not None
        self.mean, self.std = (float(m.mean), float(m.std)) if has_std else (0.0, 1.0)
        self.atomref = m.atomref if m.atomref is not None else torch.nn.Embedding(100, 1, _weight=torch.zeros(100, 1))
        self.elements = elements
        self.meta = meta

    @torch.jit.export
    def supported_elements(self) -> List[int]:
        return self.elements

    @torch.jit.export
    def metadata(self) -> str:
        return self.meta

    def forward(self, atomic_numbers: torch.Tensor, positions: torch.Tensor,
                batch: torch.Tensor) -> torch.Tensor:
        known = torch.tensor(self.elements, device=atomic_numbers.device)
        bad = atomic_numbers[~torch.isin(atomic_numbers, known)]
        if bad.numel() > 0:
            ids: List[int] = torch.unique(bad).tolist()
            raise RuntimeError("unsupported elements: " + str(ids))
        pos = positions.to(torch.float32)
        h = self.embedding(atomic_numbers)
        edge_index, edge_weight = self.graph(pos, batch)
        edge_attr = self.rbf(edge_weight)
        for block in self.interactions:
            h = h + block(h, edge_index, edge_weight, edge_attr)
        h = self.lin2(self.act(self.lin1(h))) * self.std + self.mean + self.atomref(atomic_numbers)
        e = self.readout(h, batch, dim=0, dim_size=int(batch.max()) + 1)  # [S, 1]
        return e.view(-1).to(torch.float64)


def read_xyz(path):
    rows = [r.split() for r in open(path).read().splitlines()[2:]]
    z = torch.tensor([{"H": 1, "C": 6, "N": 7, "O": 8}[r[0]] for r in rows if r])
    return z, torch.tensor([[float(v) for v in r[1:4]] for r in rows if r])


def energies_forces(m, z, x, b):
    x = x.clone().requires_grad_(True)
    e = m(z, x, b)
    return e.detach(), -torch.autograd.grad(e.sum(), x)[0]


def export_and_check(out):
    torch.manual_seed(0)
    schnet = SchNet(hidden_channels=64, num_filters=64, num_interactions=3, num_gaussians=25,
                    cutoff=CUTOFF, interaction_graph=AllPairsGraph(CUTOFF)).eval()
    meta = json.dumps({"name": "schnet_random_example", "energy_unit": "eV", "length_unit": "angstrom",
                       "description": "PyG SchNet, random weights (seed 0): wrapping example, not physical",
                       "source": "torch_geometric 2.8.1 SchNet", "licence": "MIT", "cutoff": CUTOFF})
    torch.jit.script(SchNetV1(schnet, [1, 6, 7, 8], meta)).save(out)
    m = torch.jit.load(out)
    print("saved", out, "elements", m.supported_elements(), "metadata", m.metadata())

    mols = [read_xyz(os.path.join(ROOT, "systems", "molecules", f"{n}.xyz")) for n in ("ethanol", "water")]
    z, x = torch.cat([mz for mz, _ in mols]), torch.cat([mx for _, mx in mols])
    b = torch.cat([torch.full((len(mz),), s) for s, (mz, _) in enumerate(mols)])
    e, f = energies_forces(m, z, x, b)
    ref = schnet(z, x, b).view(-1).double().detach()  # (a) the eager, unmodified model
    print("batch energies (eV):", e.tolist(), "eager SchNet:", ref.tolist())
    assert e.dtype == torch.float64 and e.shape == (2,) and torch.allclose(e, ref, rtol=1e-6, atol=0)
    for s, (zs, xs) in enumerate(mols):  # (b) alone vs in the batch
        es, fs = energies_forces(m, zs, xs, torch.zeros_like(zs))
        rel, df = abs(es.item() / e[s].item() - 1), (fs - f[b == s]).abs().max().item()
        print(f"molecule {s}: alone {es.item():.8f} eV, rel. diff {rel:.1e}, max |dF| {df:.1e} eV/Å")
        assert rel < 1e-5 and df < 1e-4
    p = torch.randperm(len(z))  # atoms of both structures interleaved
    ep, fp = energies_forces(m, z[p], x[p], b[p])
    assert torch.allclose(ep, e, rtol=1e-5) and torch.allclose(fp, f[p], atol=1e-4)
    assert torch.isfinite(f).all()  # (c) finite forces that match a central difference (float64 x)
    h, dx = 1e-3, torch.zeros_like(x, dtype=torch.float64)
    dx[1, 0] = h
    fd = -(m(z, x.double() + dx, b).sum() - m(z, x.double() - dx, b).sum()).item() / (2 * h)
    print(f"max |F| {f.abs().max().item():.4f} eV/Å; F[1,x] {f[1, 0].item():.5f}, finite diff. {fd:.5f}")
    assert abs(fd - f[1, 0].item()) < 1e-2 * max(1.0, abs(f[1, 0].item()))
    try:
        m(torch.tensor([1, 16]), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
        raise AssertionError("sulfur accepted")
    except torch.jit.Error as err:  # what a RuntimeError raised in TorchScript becomes in Python
        assert "unsupported elements: [16]" in str(err)
    print("Python checks passed")
    return m


RUN = """[system]
structure = "{root}/systems/ethanol.xyz"
[model]
path = "{model}"
device = "cpu"
[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0
[ensemble]
members = 4
seed = 1
[run]
steps = 100
[output]
directory = "{out}"
observables_interval = 10
trajectory_interval = 50
"""


def run_in_engine(binary, model_file, m, tmp):
    """mlff-md inspect, then 100 Langevin steps; the step-0 energy equals the Python one."""
    done = subprocess.run([binary, "inspect", model_file, "--device", "cpu"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"wrap_schnet_example: FAIL: `mlff-md inspect` exit {done.returncode}: {done.stderr}")
    out, cfg = os.path.join(tmp, "run"), os.path.join(tmp, "run.toml")
    with open(cfg, "w") as f:
        f.write(RUN.format(root=ROOT, model=model_file, out=out))
    done = subprocess.run([binary, "run", cfg, "--quiet"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"wrap_schnet_example: FAIL: 100-step run exit {done.returncode}: {done.stderr}")
    with h5py.File(os.path.join(out, "observables.h5"), "r") as h5:
        steps = h5["observables/potential_energy/step"][()]
        energy = h5["observables/potential_energy/value"][()]
    if steps[-1] != 100 or not torch.isfinite(torch.tensor(energy)).all():
        raise SystemExit(f"wrap_schnet_example: FAIL: run ended at step {steps[-1]}, energies {energy[-1]}")
    z, x = read_xyz(os.path.join(ROOT, "systems", "ethanol.xyz"))
    e0 = m(z, x, torch.zeros_like(z)).item()
    if abs(energy[0, 0] / e0 - 1) > 1e-5:
        raise SystemExit(f"wrap_schnet_example: FAIL: engine energy at step 0 {energy[0, 0]} != Python {e0}")
    print(f"engine: inspect ok; 100 steps of 4 members; step-0 energy {energy[0, 0]:.6f} eV = Python {e0:.6f} eV")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", help="path to mlff-md")
    parser.add_argument("--keep", help="also save the wrapped model here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_file = os.path.abspath(args.keep) if args.keep else os.path.join(tmp, "schnet_example.pt")
        m = export_and_check(model_file)
        run_in_engine(os.path.abspath(args.binary), model_file, m, tmp)
    print("wrap_schnet_example: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
