"""Optuna on the same trials: the anchor rows of ``overhead.py`` (issue 16 target 5).

Not a benchmark on its own (``overhead.py --optuna`` runs it beside hpsweep's rows).
``workers`` processes (spawned) share one Optuna study in one storage, each running
``study.optimize(n_trials=trials / workers)`` with random sampling (as hpsweep's stages
sample; TPE's own cost would only make the anchor weaker). A trial is the work of an
hpsweep trial of ``overhead.tiny_config``: the same sampled parameters (log-uniform
learning rate and L2 strength, the same ranges), the same network and optimizer
(hpsweep's own ``TrainState``: digits, one hidden layer of 16, batch 256, SGD), each
epoch reported with ``trial.report`` as hpsweep writes a ``curves`` row; Optuna keeps
no checkpoint (hpsweep writes two per epoch). Storages: ``RDBStorage`` on a SQLite
file, and ``JournalStorage`` with its ``JournalFileBackend`` (Optuna's recommended
storage for many processes). Overhead as for hpsweep:

    (workers x wall - time inside the training epochs) / trials

wall: from releasing the warmed-up processes (imports done, study loaded, one trial
run each) to the end of the last trial. The cpu figure puts the processes' CPU time in place
of workers x wall and the training's CPU time in place of its wall time (hpsweep's cpu
column subtracts wall-clock training time from CPU time: a lower bound, lower still
under load).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORAGES = ("sqlite", "journal")
LR, REG = (1e-2, 2e-1), (1e-6, 1e-3)  # overhead.tiny_config's ranges


def storage(kind: str, folder: str):  # type: ignore[no-untyped-def]
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{folder}/optuna.db")
    return optuna.storages.JournalStorage(JournalFileBackend(f"{folder}/journal.log"))


def child(kind: str, folder: str, study_name: str, trials: int, epochs: int) -> None:
    """One worker process: warm up, say ready, wait for the go, run ``trials`` trials."""
    import optuna
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from trainer import digits

    from worker.nn.hyper import Hyper
    from worker.nn.training import TrainState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, y, Xv, yv = digits()
    train_seconds = [0.0, 0.0]  # wall, CPU inside the training epochs

    def objective(trial: optuna.Trial) -> float:
        hyper = Hyper(learning_rate=trial.suggest_float("learning_rate", *LR, log=True),
                      reg=trial.suggest_float("reg", *REG, log=True), hidden=(16,),
                      batch_size=256)
        state = TrainState.create(hyper, X.shape[1], 10, seed=0)
        acc = 0.0
        for epoch in range(1, epochs + 1):
            started, cpu = time.perf_counter(), time.thread_time()
            result = state.train_epoch(X, y, Xv, yv)
            train_seconds[0] += time.perf_counter() - started
            train_seconds[1] += time.thread_time() - cpu
            acc = float(result.val_acc)
            trial.report(acc, epoch)
        return acc

    # random sampling, as hpsweep's stages do: the storage's cost, not TPE's, is compared
    study = optuna.load_study(study_name=study_name, storage=storage(kind, folder),
                              sampler=optuna.samplers.RandomSampler(seed=len(folder)))

    with threadpool_limits(1):
        objective(optuna.trial.FixedTrial({"learning_rate": 0.05, "reg": 1e-4}))  # warm-up
        train_seconds[:] = [0.0, 0.0]
        print("ready", flush=True)
        sys.stdin.readline()  # the go
        cpu = time.process_time()
        study.optimize(objective, n_trials=trials)
    print(json.dumps({"train_seconds": train_seconds[0], "train_cpu": train_seconds[1],
                      "cpu": time.process_time() - cpu, "end": time.time()}), flush=True)


def measure(kind: str, trials: int, workers: int, epochs: int) -> dict[str, float]:
    """One study of ``trials`` trials of ``epochs`` epochs on ``workers`` processes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="optuna-bench-") as folder:
        name = f"anchor-{kind}-{epochs}"
        optuna.create_study(study_name=name, storage=storage(kind, folder),
                            direction="maximize")
        each = -(-trials // workers)
        procs = [subprocess.Popen([sys.executable, __file__, kind, folder, name, str(each),
                                   str(epochs)], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(workers)]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        started = time.time()  # the children's clock: their last trial's end, not their exit
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [json.loads(p.communicate(timeout=3600)[0].strip().splitlines()[-1])
                for p in procs]
        wall = max(o["end"] for o in outs) - started
        done = len(optuna.load_study(study_name=name, storage=storage(kind, folder))
                   .get_trials(deepcopy=False))
    train = sum(o["train_seconds"] for o in outs)
    cpu = sum(o["cpu"] - o["train_cpu"] for o in outs)
    return {"wall": wall, "trials": done, "train_ms": train / done * 1e3,
            "overhead_ms": (workers * wall - train) / done * 1e3,
            "cpu_overhead_ms": cpu / done * 1e3}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
