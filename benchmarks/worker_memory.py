"""Trial worker memory: resident memory of Ray's trial workers over many quick trials, against one plain `fit()`.

    python -m benchmarks.worker_memory [--trials 40] [--epochs 1] [--tiny] [--cpus 2]

Runs `--trials` trials of the `quick` budget (one factor with two values, the rest as seeds; `--epochs` each,
`--tiny`: the tests' tiny synthetic set) through `ablations.runner.run_experiment` on a fresh local Ray, sampling the
resident memory of every trial worker (Linux /proc: VmHWM for the peak, VmRSS for the last sample). The reference is
the same configuration trained once by `fit()` in a plain process. Printed: each worker's peak and last RSS, and
their medians and ranges as ratios to the plain run's. The goal (issue #16) is a median last-RSS ratio of at most
1.5 after 40 trials.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

from tests.helpers.processes import descendants

GOAL = 1.5
TINY = {"data.synthetic_clips_per_class": 4, "model.num_frames": 16, "train.batch_size": 16}
_PLAIN = """
import json, sys
from ablations.expand import build_config
from mmn.train import fit
config = build_config("quick", json.loads(sys.argv[1]), "plain")
fit(config, out_dir=sys.argv[2], progress=False)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({k: int(status[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS")}))
"""


def _status_mib(pid: int) -> dict[str, float] | None:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    status = dict(line.split(":", 1) for line in lines if ":" in line)
    return {key: int(status[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS") if key in status}


class WorkerSampler(threading.Thread):
    """Every `period` s: the peak and resident memory (MiB) of each process below this one that has run a trial."""

    def __init__(self, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.period, self.stop, self.workers = period, threading.Event(), {}  # pid → {"VmHWM", "VmRSS"}

    def run(self) -> None:
        while not self.stop.wait(self.period):
            for pid, command in descendants(os.getpid()).items():
                if pid in self.workers or command.startswith("ray::ImplicitFunc"):
                    sample = _status_mib(pid)
                    if sample:
                        self.workers[pid] = sample


def plain_fit(overrides: dict) -> dict[str, float]:
    """Peak and final RSS (MiB) of one `fit()` of the same configuration in a fresh plain process."""
    with tempfile.TemporaryDirectory(prefix="plainfit") as out:
        done = subprocess.run([sys.executable, "-c", _PLAIN, json.dumps(overrides), out], check=True,
                              capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def ray_trials(trials: int, overrides: dict, cpus: int) -> dict[int, dict[str, float]]:
    import ray

    from ablations.runner import RunOptions, run_experiment, worker_runtime_env
    from ablations.spec import load_spec

    with tempfile.TemporaryDirectory(prefix="wm") as root:
        spec = Path(root) / "worker_memory.yaml"
        spec.write_text(textwrap.dedent(f"""\
            name: worker_memory
            factors:
              model.mtm: {{values: [true, false]}}
            seeds: {max(1, (trials + 1) // 2)}
            metric: val_top1
            """))
        # started here (the runner would join it) to choose its CPUs; with the runner's worker environment
        temp = tempfile.mkdtemp(prefix="rwm", dir="/tmp")  # short: Ray's socket paths must fit
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, _temp_dir=temp,
                 runtime_env=worker_runtime_env())
        sampler = WorkerSampler()
        sampler.start()
        try:
            outcome = run_experiment(load_spec(spec), RunOptions(storage=str(Path(root) / "runs"),
                                                                 overrides={k: v for k, v in overrides.items()
                                                                            if k != "train.epochs"},
                                                                 epochs=overrides["train.epochs"]))
        finally:
            sampler.stop.set()
            sampler.join()
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
    print(f"{len(outcome.finished)} trials finished, {len(outcome.failed)} failed")
    return sampler.workers


def _summary(values: list[float], reference: float) -> str:
    ratios = [v / reference for v in values]
    return (f"median {statistics.median(values):7.0f} MiB = {statistics.median(ratios):.2f}x "
            f"(range {min(ratios):.2f}-{max(ratios):.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40, help="trials to run (default 40)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny synthetic set instead of the quick one")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use, one trial each (default 2)")
    args = parser.parse_args()
    if args.trials < 1 or args.epochs < 1 or args.cpus < 1:
        parser.error("--trials, --epochs and --cpus must be at least 1")
    # one thread per trial, as each trial gets one CPU
    overrides = {**(TINY if args.tiny else {}), "train.epochs": args.epochs, "train.warmup_epochs": 0,
                 "train.threads": 1}
    plain = plain_fit(overrides)
    workers = ray_trials(args.trials, overrides, args.cpus)
    if not workers:
        sys.exit("no trial worker was seen (not Linux, or Ray named its workers differently)")
    print(f"plain fit(): peak {plain['VmHWM']:.0f} MiB, last {plain['VmRSS']:.0f} MiB")
    for pid, sample in sorted(workers.items()):
        print(f"worker {pid}: peak {sample['VmHWM']:.0f} MiB, last {sample['VmRSS']:.0f} MiB")
    print(f"workers' peak: {_summary([s['VmHWM'] for s in workers.values()], plain['VmHWM'])}")
    last = [s["VmRSS"] for s in workers.values()]
    print(f"workers' last: {_summary(last, plain['VmRSS'])}")
    ratio = statistics.median(last) / plain["VmRSS"]
    print(f"goal: median last-RSS ratio <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'} ({ratio:.2f})")


if __name__ == "__main__":
    main()
