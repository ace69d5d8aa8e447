"""Load: an experiment of 500 tiny trials (1 epoch on one synthetic clip per class each) completes with every result
recorded and the report built.

    python -m benchmarks.load_500 [--trials 500] [--cpus N] [--keep DIR]

Runs `python -m ablations.run` in-process on a fresh local Ray instance, on a one-variant spec with `--seeds
TRIALS` and the smallest model (width 16, one block, one scale, 8 frames). Prints the time per trial (Ray, Optuna
and the training together), the time of the report, and checks that every planned config hash has exactly one
finished record (mmn.folders.RESULT) and that the report counts them all. Exit status 0 when all of that holds.
tests/test_reliability.py runs the same with 40 trials.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
         "model.num_frames": 8, "train.batch_size": 8}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray instance (default: all)")
    parser.add_argument("--keep", help="experiment storage folder to keep (default: a temporary one, deleted)")
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from ablations import run as ablations_run
    from ablations.runner import RunOptions, plan_experiment
    from ablations.spec import load_spec
    from mmn.config import parse_assignments
    from mmn.folders import RESULT

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="load500-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = work / "load.yaml"
    spec.write_text("name: load\ndescription: many tiny seeds of one variant\nfactors:\n  model.mtm: [true]\n"
                    "seeds: 1\n")
    sets = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    report = ablations_run._report

    def timed_report(outcome):
        timings["trials"] = time.perf_counter() - started
        report(outcome)
        timings["report"] = time.perf_counter() - started - timings["trials"]

    ablations_run._report = timed_report
    status = ablations_run.main([str(spec), "--storage", str(work / "runs"), "--epochs", "1",
                                 "--seeds", str(args.trials), *sets])
    total = time.perf_counter() - started
    cpus = ray.cluster_resources().get("CPU", 0)
    ray.shutdown()

    folder = work / "runs" / "load"
    planned = {p.config_hash for p in plan_experiment(load_spec(spec), RunOptions(
        epochs=1, seeds=args.trials, overrides=parse_assignments([f"{k}={v}" for k, v in SMALL.items()])))}
    finished: dict[str, int] = {}
    for path in folder.rglob(RESULT):
        try:
            record = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("status") == "finished":
            finished[record["config_hash"]] = finished.get(record["config_hash"], 0) + 1
    summary = (folder / "report" / "summary.md").read_text() if (folder / "report" / "summary.md").exists() else ""
    checks = {
        "exit status 0": status == 0,
        f"all {args.trials} planned configs finished": set(finished) == planned and len(planned) == args.trials,
        "no config finished twice": all(count == 1 for count in finished.values()),
        f"report counts {args.trials} finished": f"trials: {args.trials} finished" in summary,
    }
    print(f"\n{args.trials} trials on {cpus:g} CPUs: {timings.get('trials', total):.1f} s of trials "
          f"({timings.get('trials', total) / args.trials:.2f} s per trial), report {timings.get('report', 0):.1f} s, "
          f"total {total:.1f} s")
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    if args.keep:
        print(f"experiment folder: {folder}")
    elif all(checks.values()):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"experiment folder kept for inspection: {folder}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
