"""A small model's epoch: hpsweep's NumPy trainer against PyTorch and against older code.

    python benchmarks/small_epoch.py [--baseline DIR] [--rounds 5] [--epochs 200]

The digits-sized workload of issue 16: 1,297 training rows x 64 float32 features,
hidden 100, 10 classes, batch 64, SGD (lr 1e-2); one epoch = ``train_epoch``'s
21 steps plus the validation pass over 500 rows. One BLAS/intra-op thread each.

Each contender runs in its own process, ``--rounds`` times, interleaved (A B C A B
C ...), so drifts of a shared machine's load hit all alike; each round times
``--epochs`` epochs after 5 warm-up ones and keeps their median. Printed: the
median over rounds of CPU milliseconds per epoch (``time.thread_time``: waiting
for a core does not count) and of wall milliseconds.

Contenders: this checkout's trainer; ``--baseline DIR``, the ``worker`` package of
another checkout (e.g. ``git archive main worker | tar -x -C /tmp/base``); and a
``torch.nn`` MLP with ``torch.optim.SGD`` doing the same work, when PyTorch is
installed (a benchmark-only dependency: ``pip install torch``). Target: hpsweep's
epoch <= 0.25x PyTorch's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.25

# Each contender prints one JSON line: {"cpu_ms": median, "wall_ms": median}
_COMMON = """
import json, statistics, sys, time
import numpy as np
d = np.load(sys.argv[1]); X, y, Xv, yv = d["X"], d["y"], d["Xv"], d["yv"]
EPOCHS = int(sys.argv[2])

def timed(epoch):
    for _ in range(5):
        epoch()
    cpu, wall = [], []
    for _ in range(EPOCHS):
        c, w = time.thread_time(), time.perf_counter()
        epoch()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    print(json.dumps({"cpu_ms": statistics.median(cpu) * 1e3,
                      "wall_ms": statistics.median(wall) * 1e3}))
"""

_HPSWEEP = _COMMON + """
code = sys.argv[3]
# the editable install's finder would map ``worker`` to this checkout: drop it
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, code)
from threadpoolctl import threadpool_limits
from worker.nn.hyper import Hyper
from worker.nn.training import TrainState
assert TrainState.__module__ and sys.modules["worker"].__path__[0].startswith(code)
state = TrainState.create(Hyper(learning_rate=1e-2, hidden=(100,), batch_size=64), 64, 10, 0)
with threadpool_limits(1):
    timed(lambda: state.train_epoch(X, y, Xv, yv))
"""

_TORCH = _COMMON + """
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
Xt, yt = torch.from_numpy(X), torch.from_numpy(y).long()
Xvt, yvt = torch.from_numpy(Xv), torch.from_numpy(yv).long()
net = torch.nn.Sequential(torch.nn.Linear(64, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
opt = torch.optim.SGD(net.parameters(), lr=1e-2)
loss_fn = torch.nn.CrossEntropyLoss()
gen = torch.Generator().manual_seed(0)

def epoch():
    perm = torch.randperm(Xt.shape[0], generator=gen)
    for start in range(0, Xt.shape[0], 64):
        idx = perm[start:start + 64]
        xb, yb = Xt[idx], yt[idx]
        opt.zero_grad(set_to_none=True)
        scores = net(xb)
        loss = loss_fn(scores, yb)
        loss.backward()
        opt.step()
        loss.item(), (scores.argmax(1) == yb).sum().item()  # the metrics hpsweep keeps
    with torch.no_grad():
        s = net(Xvt)
        loss_fn(s, yvt).item(), (s.argmax(1) == yvt).float().mean().item()

timed(epoch)
"""


def digits_file(folder: Path) -> Path:
    """The workload's arrays, saved once so every contender reads the same bytes."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from trainer import digits

    path = folder / "digits.npz"
    X, y, Xv, yv = digits()
    np.savez(path, X=X, y=y, Xv=Xv, yv=yv)
    return path


def has_torch() -> bool:
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True,
                          check=False).returncode == 0


def run(script: str, *args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import os
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a folder holding another version's worker/ package")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=200)
    args = ap.parse_args()
    contenders = {"hpsweep (this checkout)": (_HPSWEEP, str(ROOT))}
    if args.baseline:
        contenders["hpsweep (baseline)"] = (_HPSWEEP, str(args.baseline.resolve()))
    if has_torch():
        contenders["PyTorch"] = (_TORCH, "")
    else:
        print("PyTorch is not installed here: the ratio to it is not measured "
              "(pip install torch, a benchmark-only dependency)")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        data = str(digits_file(Path(folder)))
        results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, (script, code) in contenders.items():
                results[name].append(run(script, data, str(args.epochs),
                                         *([code] if code else [])))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("cpu_ms", "wall_ms")}
           for n, rs in results.items()}
    for name, m in med.items():
        rounds = ", ".join(f"{r['cpu_ms']:.3f}" for r in results[name])
        print(f"  {name:24s} {m['cpu_ms']:.3f} ms CPU/epoch, {m['wall_ms']:.3f} ms wall "
              f"(rounds: {rounds})")
    ours = med["hpsweep (this checkout)"]["cpu_ms"]
    if "hpsweep (baseline)" in med:
        print(f"  this checkout / baseline: {ours / med['hpsweep (baseline)']['cpu_ms']:.3f}")
    if "PyTorch" in med:
        ratio = ours / med["PyTorch"]["cpu_ms"]
        print(f"  hpsweep / PyTorch: {ratio:.3f} (target <= {TARGET}): "
              f"{'met' if ratio <= TARGET else 'missed'}")


if __name__ == "__main__":
    main()
