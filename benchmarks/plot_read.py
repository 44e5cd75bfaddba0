"""How fast run logs are read: optbench.results.read_log (pandas' C parser, which the plotter and the results
API use) against a row-by-row csv.DictReader reader, on the same synthetic steps.csv in the same process.

A full hypergrad grid logs about 7.8k steps.csv rows per VGG run (200 epochs x 391 steps / log_every 10) over
hundreds of runs, so reading dominates `python -m optbench.plot` there.
    python benchmarks/plot_read.py [--rows 80000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from optbench.results import read_log


def read_log_frame(path: Path) -> dict[str, np.ndarray]:
    frame = read_log(path)
    return {name: frame[name].to_numpy(dtype=float) for name in frame.columns}


def read_rowwise(path: Path) -> dict[str, np.ndarray]:
    """The baseline: every row a dict, every cell converted by hand (blank -> NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) if r[key] else math.nan for r in rows]) for key in rows[0]}


def write_steps(path: Path, rows: int) -> None:
    """steps.csv as the trainer writes it: repr floats, and a column (mu) that appears late (blank before)."""
    with open(path, "w") as f:
        f.write("step,epoch,loss,lr,mu\n")
        for i in range(1, rows + 1):
            mu = repr(0.9 - 1.0 / (i + 10)) if i > rows // 10 else ""
            f.write(f"{i},{i // 391 + 1},{repr(2.3 / (1 + 0.001 * i))},{repr(1e-3 * (1 + i / rows))},{mu}\n")


def best_time(fn, path: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=80_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "steps.csv"
        write_steps(path, args.rows)
        fast, slow = read_log_frame(path), read_rowwise(path)
        assert fast.keys() == slow.keys() and all(np.array_equal(fast[k], slow[k], equal_nan=True) for k in fast)
        t_fast = best_time(read_log_frame, path, args.repeat)
        t_slow = best_time(read_rowwise, path, args.repeat)
    print(f"steps.csv with {args.rows} rows (best of {args.repeat}):")
    print(f"  csv.DictReader row by row (baseline): {t_slow * 1e3:8.1f} ms")
    print(f"  results.read_log (pandas):            {t_fast * 1e3:8.1f} ms")
    print(f"  speedup: {t_slow / t_fast:.2f}x")


if __name__ == "__main__":
    main()
