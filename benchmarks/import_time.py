"""Time `import tfnewton` and the first use of the numerical modules, in fresh interpreters.

Usage: python benchmarks/import_time.py [--repeat 5]
Budget (issue 2): `import tfnewton` < 2 s.
"""

import argparse
import statistics
import subprocess
import sys

SNIPPETS = {
    "import tfnewton": "import tfnewton",
    "+ algorithms, tasks (loads torch)": "import tfnewton; tfnewton.algorithms; tfnewton.tasks",
}


def measure(code: str) -> float:
    timer = f"import time; _t = time.perf_counter(); {code}; print(time.perf_counter() - _t)"
    return float(subprocess.run([sys.executable, "-c", timer], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'what':40s} {'median s':>9s} {'max s':>7s}")
    for label, code in SNIPPETS.items():
        times = [measure(code) for _ in range(args.repeat)]
        print(f"{label:40s} {statistics.median(times):9.3f} {max(times):7.3f}")


if __name__ == "__main__":
    main()
