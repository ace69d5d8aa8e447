"""The demo with and without trial packs, end to end, side by side: `python -m ablations.run msm_mtm` as a user runs
it, once with `--pack off` and once with each variant's seeds in one pack, alternating, each into a fresh folder.

    python -m benchmarks.pack_demo [--repeats 1] [--pack 3] [--epochs N] [--keep DIR] [-- ablations.run arguments]

Printed: each run's wall time (Ray's start-up and the report included), the ratio off/packed per repeat, and the
median and range of the ratios. The goal of issue #17 on a 2-core CPU: the packed demo at least 1.4x faster.
`--epochs` shortens both runs alike (a quicker check; not the demo's figure). `--keep DIR` keeps the experiments
there (DIR/off-1, DIR/packed-1, ...) instead of in a temporary folder.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_demo(pack: str, storage: str, extra: list[str]) -> float:
    """Seconds of one `python -m ablations.run msm_mtm --pack PACK` into `storage`; a failed run stops the benchmark."""
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    environment.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "ablations.run", "msm_mtm", "--pack", pack, "--storage", storage, *extra]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of runs (default 1)")
    parser.add_argument("--pack", default="3", help="members per pack of the packed run (default 3: the seeds of the "
                        "demo's first round)")
    parser.add_argument("--epochs", type=int, help="epochs per trial for both runs (default: the demo's)")
    parser.add_argument("--keep", help="keep the experiments in this folder")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"] + (["--epochs", str(args.epochs)] if args.epochs else [])
    ratios = []
    for repeat in range(1, args.repeats + 1):
        with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="pd")) as folder:
            alone = run_demo("off", f"{folder}/off-{repeat}", extra)
            packed = run_demo(args.pack, f"{folder}/packed-{repeat}", extra)
        ratios.append(alone / packed)
        print(f"repeat {repeat}: --pack off {alone:6.1f} s   --pack {args.pack} {packed:6.1f} s   "
              f"off/packed {alone / packed:.2f}x", flush=True)
    print(f"off/packed: median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x over "
          f"{len(ratios)} repeat(s); goal >= 1.4x")


if __name__ == "__main__":
    main()
