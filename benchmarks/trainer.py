"""How fast does the NumPy trainer run, next to NumPy's own matmul rate?

    python benchmarks/trainer.py

(a) digits (sklearn ``load_digits``: 1,297 training / 500 validation examples,
    standardised, hidden 100, batch 64): milliseconds per epoch of training only
    (``train_epoch`` given an empty validation split; the validation pass is
    timed on its own).
(b) a synthetic CIFAR-10-sized set made on the fly (50,000 x 3,072 float32:
    49,000 training + 1,000 validation rows, hidden 500, 10 classes, batch 200):
    seconds per ``train_epoch`` call (all minibatch steps plus the validation
    pass), achieved GFLOP/s, and that rate as a fraction of a 2048 x 2048 float32
    matmul with the same number of BLAS threads, measured just before each epoch
    (the machine's speed drifts, so each epoch is compared with its own neighbour);
    then where the time of one step goes and the ceiling that implies (a step
    doing nothing but the two layer-1 matmuls, the minibatch gather and one pass
    over W1), and the peak memory above the baseline before the data was made,
    relative to the data's size.

The load average is printed at the start and the end: other processes on the
same cores slow the memory-bound parts most, so compare runs at similar load.

Flops counted are the work any trainer must do: per example and layer, 2*in*out
forward and 2*in*out for the weight gradient, plus 2*in*out for the input gradient
of every layer but the first; each validation pass counts 2*in*out per example.
Times are medians over the epochs (best in brackets).
"""

from __future__ import annotations

import itertools
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.nn import model, schedules
from worker.nn.hyper import Hyper
from worker.nn.training import EpochResult, TrainState

ALL_THREADS = os.cpu_count() or 1
CIFAR_DIMS = (3072, 500, 10)
DIGITS_DIMS = (64, 100, 10)

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def matmul_rate(threads: int, reps: int = 3, n: int = 2048) -> float:
    """Median GFLOP/s of an n x n float32 matmul with ``threads`` BLAS threads."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    with threadpool_limits(threads):
        np.matmul(a, b, out=out)  # warm-up
        times = [timed(lambda: np.matmul(a, b, out=out)) for _ in range(reps)]
    return 2 * n**3 / statistics.median(times) / 1e9


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def epoch_flops(dims: tuple[int, ...], n_train: int, n_val: int, n_evals: int) -> float:
    """Forward + weight gradient + input gradient (not layer 1) per training example,
    plus one forward per validation example and evaluation."""
    pairs = list(itertools.pairwise(dims))
    fwd = sum(2 * i * o for i, o in pairs)
    per_train = 2 * fwd + sum(2 * i * o for i, o in pairs[1:])
    return float(n_train * per_train + n_val * n_evals * fwd)


def run_epoch(state: TrainState, data: Data) -> tuple[float, float]:
    """Seconds of one ``train_epoch`` call and of a separate identical validation pass."""
    X, y, X_val, y_val = data
    t_epoch = timed(lambda: check(state.train_epoch(X, y, X_val, y_val)))
    t_val = timed(lambda: model.evaluate(state.params, X_val, y_val))
    if state.ema_params is not None:
        t_val += timed(lambda: model.evaluate(state.ema_params, X_val, y_val))
    return t_epoch, t_val


def check(result: EpochResult) -> None:
    assert not result.diverged, result


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def reset_peak_rss() -> tuple[int, str]:
    """Restart the peak-RSS count at the current RSS (Linux); return (baseline, method).

    Without /proc, the baseline is the peak so far, which can hide earlier,
    already freed allocations (the ratio is then a lower bound).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM and ru_maxrss to the current RSS
        return peak_rss_bytes(), "ru_maxrss, peak reset via /proc/self/clear_refs before"
    except OSError:
        return peak_rss_bytes(), "ru_maxrss; the peak could not be reset: a lower bound"


def synthetic_cifar() -> Data:
    """50,000 x 3,072 standard-normal float32 rows, labels from a random linear teacher.

    The splits are views of one array: no copy."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50_000, 3072), dtype=np.float32)
    teacher = rng.standard_normal((3072, 10), dtype=np.float32)
    y = np.concatenate([(X[i : i + 5000] @ teacher).argmax(1) for i in range(0, 50_000, 5000)])
    return X[:49_000], y[:49_000], X[49_000:], y[49_000:]


def digits() -> Data:
    """sklearn digits, standardised with the training split's statistics: 1,297 + 500 rows."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    X, y = X[perm], y[perm]
    mean, std = X[:1297].mean(0), X[:1297].std(0) + 1e-8
    X = ((X - mean) / std).astype(np.float32)
    return X[:1297], y[:1297], X[1297:], y[1297:]


def describe_blas() -> list[str]:
    lines = ["BLAS (threadpoolctl):"]
    for lib in threadpool_info():
        lines.append(
            f"  {lib['user_api']}: {lib['internal_api']} {lib.get('version')}, "
            f"architecture {lib.get('architecture')}, threading {lib.get('threading_layer')}, "
            f"{lib['num_threads']} threads max ({lib['filepath'].rsplit('/', 1)[-1]})"
        )
    lines.append(f"  OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    return lines


def median_best(times: list[float], scale: float, unit: str) -> str:
    return f"{statistics.median(times) * scale:.3f} {unit} (best {min(times) * scale:.3f})"


def cifar_line(name: str, hyper: Hyper, threads: int, data: Data, epochs: int) -> str:
    """Epochs of one configuration, each next to a fresh matmul-rate measurement."""
    state = TrainState.create(hyper, CIFAR_DIMS[0], CIFAR_DIMS[-1], seed=0)
    flops = epoch_flops(CIFAR_DIMS, 49_000, 1_000, 2 if hyper.ema_decay else 1)
    times, vals, fractions, mm = [], [], [], []
    for _ in range(epochs):
        mm.append(matmul_rate(threads))
        with threadpool_limits(threads):
            t_epoch, t_val = run_epoch(state, data)
        times.append(t_epoch)
        vals.append(t_val)
        fractions.append(flops / t_epoch / 1e9 / mm[-1])
    rate = flops / statistics.median(times) / 1e9
    return (
        f"    {name:23s} {threads} thread{'s' if threads > 1 else ' '}: "
        f"{median_best(times, 1, 's/epoch')}, validation {statistics.median(vals):.3f} s; "
        f"{rate:.1f} GFLOP/s vs matmul {statistics.median(mm):.1f} = "
        f"{statistics.median(fractions):.2f} of the matmul rate (best {max(fractions):.2f})"
    )


def step_breakdown(hyper: Hyper, data: Data, steps: int = 60) -> str:
    """Mean milliseconds per minibatch step of its parts (1 BLAS thread)."""
    X, y = data[0], data[1]
    state = TrainState.create(hyper, CIFAR_DIMS[0], CIFAR_DIMS[-1], seed=0)
    net, params, opt = state.net, state.params, state.opt
    idx_all = state.rng.permutation(X.shape[0])
    parts = dict.fromkeys(["gather", "layer-1 matmuls", "optimizer step", "whole step"], 0.0)
    h1 = np.empty((hyper.batch_size, CIFAR_DIMS[1]), np.float32)
    buf = np.empty((hyper.batch_size, CIFAR_DIMS[0]), np.float32)
    with threadpool_limits(1):
        for i in range(steps + 1):
            idx = idx_all[i * hyper.batch_size : (i + 1) * hyper.batch_size]
            t0 = time.perf_counter()
            xb, yb = np.take(X, idx, axis=0, out=buf, mode="clip"), y[idx]  # as train_epoch
            t1 = time.perf_counter()
            lr = schedules.lr_at(hyper, 0, i, [])
            _, grads = net.loss(xb, yb, rng=state.rng)  # the MLP (reg, dropout from hyper)
            t2 = time.perf_counter()
            opt.step(params, grads, lr)
            t3 = time.perf_counter()
            np.matmul(xb, params["W1"], out=h1)
            np.matmul(xb.T, h1, out=grads["W1"])
            t4 = time.perf_counter()
            if i:  # the first step allocates buffers and optimizer slots
                parts["gather"] += t1 - t0
                parts["optimizer step"] += t3 - t2
                parts["whole step"] += t3 - t0
                parts["layer-1 matmuls"] += t4 - t3
        w1, dw1 = params["W1"], grads["W1"]
        one_pass = min(timed(lambda: np.subtract(w1, dw1, out=w1)) for _ in range(20))
        mm_rate = matmul_rate(1)
    whole = parts["whole step"]
    rest = whole - parts["gather"] - parts["optimizer step"] - parts["layer-1 matmuls"]
    shown = [*parts.items(), ("everything else", rest)]
    body = ", ".join(
        f"{k} {v / steps * 1e3:.2f}" + ("" if k == "whole step" else f" ({v / whole:.0%})")
        for k, v in shown
    )
    layer1_flops = epoch_flops(CIFAR_DIMS[:2], hyper.batch_size, 0, 0)
    step_flops = epoch_flops(CIFAR_DIMS, hyper.batch_size, 0, 0)
    per_step = {k: v / steps for k, v in parts.items()}
    # what no NumPy step can avoid: both layer-1 matmuls, the gather, one pass over W1
    floor = per_step["layer-1 matmuls"] + per_step["gather"] + one_pass
    return (
        f"    time per step, sgd, 1 thread, ms: {body}\n"
        f"    the layer-1 matmuls alone run at "
        f"{layer1_flops / per_step['layer-1 matmuls'] / 1e9 / mm_rate:.2f} of the matmul rate, "
        f"the whole step at {step_flops / per_step['whole step'] / 1e9 / mm_rate:.2f}; "
        f"one fused read-modify-write pass over W1 (the least any update costs) takes "
        f"{one_pass * 1e3:.2f} ms\n"
        f"    ceiling: a step of only those matmuls, the gather and that one pass would run at "
        f"{step_flops / floor / 1e9 / mm_rate:.2f} of the matmul rate"
    )


def bench_cifar() -> list[str]:
    base, method = reset_peak_rss()
    data = synthetic_cifar()
    data_bytes = sum(a.nbytes for a in data)
    out = [
        "(b) synthetic CIFAR-10 size: 49,000 train + 1,000 val rows x 3,072 float32, hidden 500,"
        f" batch 200 ({data_bytes / 1e6:.0f} MB of data); per epoch: 49,000-example training"
        " + validation"
    ]
    base_h = Hyper(learning_rate=1e-3, hidden=(500,), batch_size=200)
    out.append(cifar_line("sgd", base_h, 1, data, epochs=3))
    out.append(cifar_line("sgd", base_h, ALL_THREADS, data, epochs=3))
    nesterov = Hyper(learning_rate=1e-3, hidden=(500,), batch_size=200, update_rule="nesterov",
                     reg=1e-3)  # fmt: skip
    out.append(cifar_line("nesterov, reg 1e-3", nesterov, 1, data, epochs=1))
    adam = Hyper(learning_rate=1e-4, hidden=(500,), batch_size=200, update_rule="adam",
                 dropout=0.5, ema_decay=0.999)  # fmt: skip
    out.append(cifar_line("adam, dropout 0.5, EMA", adam, 1, data, epochs=1))
    out.append(step_breakdown(base_h, data))
    peak = peak_rss_bytes() - base
    out.append(
        f"    peak memory above the pre-data baseline: {peak / 1e6:.0f} MB = "
        f"{peak / data_bytes:.2f}x the dataset ({method})"
    )
    return out


def digits_line(hyper: Hyper, threads: int, data: Data, matmul: float) -> str:
    X, y, X_val, y_val = data
    no_val = (X_val[:0], y_val[:0])  # an empty validation split: train_epoch = training only
    steps = -(-X.shape[0] // hyper.batch_size)
    state = TrainState.create(hyper, DIGITS_DIMS[0], DIGITS_DIMS[-1], seed=0)
    with threadpool_limits(threads):
        for _ in range(5):  # warm-up: buffers, optimizer slots, caches
            state.train_epoch(X, y, *no_val)
        train = [timed(lambda: check(state.train_epoch(X, y, *no_val))) for _ in range(200)]
        val = [timed(lambda: model.evaluate(state.params, X_val, y_val)) for _ in range(50)]
    rate = epoch_flops(DIGITS_DIMS, X.shape[0], 0, 0) / statistics.median(train) / 1e9
    return (
        f"    sgd {threads} thread{'s' if threads > 1 else ' '}: "
        f"{median_best(train, 1e3, 'ms/epoch')} = "
        f"{statistics.median(train) / steps * 1e6:.0f} us/step ({steps} steps); "
        f"{rate:.1f} GFLOP/s = {rate / matmul:.3f} of the matmul rate; "
        f"(validation pass apart: {statistics.median(val) * 1e3:.2f} ms)"
    )


def bench_digits(rates: dict[int, float]) -> list[str]:
    data = digits()
    hyper = Hyper(learning_rate=1e-2, hidden=(100,), batch_size=64)
    out = [
        "(a) digits: 1,297 train + 500 val rows x 64 float32, hidden 100, batch 64; "
        "TRAINING ONLY (train_epoch with an empty validation split)"
    ]
    out += [digits_line(hyper, threads, data, rates[threads]) for threads in (1, ALL_THREADS)]
    return out


def load_line(when: str) -> str:
    """The 1-minute load average: other processes on these cores slow every number."""
    return f"load average at {when}: {os.getloadavg()[0]:.2f} on {ALL_THREADS} cores"


def main() -> None:
    for line in describe_blas():
        print(line)
    print(load_line("start"))
    rates = {t: matmul_rate(t, reps=5) for t in (1, ALL_THREADS)}
    print(
        "2048x2048 float32 matmul at start: "
        + ", ".join(f"{r:.1f} GFLOP/s with {t} thread(s)" for t, r in rates.items()),
        flush=True,
    )
    for line in bench_cifar():
        print(line, flush=True)
    for line in bench_digits(rates):
        print(line, flush=True)
    print(load_line("end"))


if __name__ == "__main__":
    main()
