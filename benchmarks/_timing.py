"""The timer the benchmark scripts share (run them as ``python benchmarks/NAME.py``:
Python then puts this folder first on ``sys.path``, so ``from _timing import timed`` works)."""

import os
import platform
import statistics
import time
from pathlib import Path


def timed(fn, repeats: int):
    """Median wall-clock and CPU (process) seconds over the repeats, and the last result.

    On a shared machine the wall clock measures the neighbours too; the CPU time of this
    process (all its threads) is what the work costs. On an idle machine with T threads the
    wall time lies between CPU / T and CPU.
    """
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def machine() -> dict:
    """The machine the figures were measured on: CPU model, cores, threads this process may
    use, and the Python version."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "threads_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }
