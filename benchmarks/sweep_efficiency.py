"""How much of a sweep's wall time is training: runs the quick msm_mtm experiment and prints the efficiency.

    python -m benchmarks.sweep_efficiency [--epochs N] [--storage DIR] [ablations.run options ...]

efficiency = Σ in-trial training time / (sweep wall time × concurrent trial slots); the goal is ≥ 0.85. It also
prints Ray's start-up time and the mean per-trial overhead (a trial's lifetime in Ray beyond its training time).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray

from ablations.runner import RunOptions, run_experiment
from ablations.spec import load_spec
from mmn.folders import RESULT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="msm_mtm")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the quick budget's)")
    parser.add_argument("--storage", default=None, help="experiments folder (default: a fresh temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    storage = args.storage or tempfile.mkdtemp(prefix="sweep")

    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - started
    slots = int(ray.cluster_resources().get("CPU", 1))

    spec = load_spec(args.experiment)
    sweep_started = time.perf_counter()
    outcome = run_experiment(spec, RunOptions(storage=storage, epochs=args.epochs))
    wall = time.perf_counter() - sweep_started
    ray.shutdown()

    trials = [json.loads(p.read_text()) for p in Path(storage, spec.name).rglob(RESULT)]
    training = sum(t.get("wall_time_s", 0.0) for t in trials)
    slots = min(slots, len(trials))
    print(f"{len(outcome.finished)} of {outcome.planned} trials finished in {wall:.1f} s on {slots} slots")
    print(f"Ray start-up: {startup:.1f} s")
    print(f"summed in-trial training time: {training:.1f} s")
    print(f"per-trial overhead: {(wall * slots - training) / max(len(trials), 1):.1f} s")
    print(f"efficiency = training / (wall × slots) = {training / (wall * slots):.2f}   (goal >= 0.85)")


if __name__ == "__main__":
    main()
