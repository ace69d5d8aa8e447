"""Analysis at scale: collect + statistics + LaTeX and Markdown tables of 10,000 trials x 20 epochs (plots excluded).

    python -m benchmarks.analysis_scale [--variants 20] [--seeds 500] [--epochs 20] [--keep DIR]

Writes a fake experiment folder in the contract's format (tests/helpers/experiment_factory.py: Ray-like nested trial
folders, a trial record + history.jsonl each) into a temporary folder, then times the analysis from a cold process
state (nothing cached in Python; the OS page cache is warm from writing). The goal is 10 s; the ratio printed is
measured time / goal (below 1 meets it).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from analysis.collect import collect, read_experiment
from analysis.stats import failed_trials, summarize
from analysis.tables import latex_table, markdown_table
from tests.helpers.experiment_factory import make_experiment

GOAL_S = 10.0
METRICS = ["top1", "top5", "body_top1", "f1_mean"]


def _factors(variants: int) -> dict[str, list]:
    """MSM x MTM x as many learning rates as make up `variants` (a multiple of 4)."""
    return {"model.msm": ["released", "off"], "model.mtm": [True, False],
            "train.lr": [round(1e-3 * (i + 1), 4) for i in range(max(variants // 4, 1))]}


def run(root: Path, variants: int, seeds: int, epochs: int) -> dict[str, float]:
    start = time.perf_counter()
    factors = _factors(variants)
    experiment = make_experiment(root, name="scale", factors=factors,
                                 factor_labels={"model.msm": "MSM", "model.mtm": "MTM", "train.lr": "LR"},
                                 reference={key: values[0] for key, values in factors.items()},
                                 seeds=range(seeds), epochs=epochs)
    timings = {"write": time.perf_counter() - start}

    start = time.perf_counter()
    info = read_experiment(experiment)
    table = collect(experiment)
    timings["collect"] = time.perf_counter() - start
    start = time.perf_counter()
    summary = summarize(table, [info], METRICS)
    failed_trials(table)
    latex_table(summary, [info], METRICS)
    markdown_table(summary, [info], METRICS)
    timings["stats + tables"] = time.perf_counter() - start
    timings["trials"] = int((table["row"] == "summary").sum())
    timings["rows"] = len(table)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="write the fake experiment here and keep it")
    args = parser.parse_args()
    if args.keep:
        timings = run(args.keep, args.variants, args.seeds, args.epochs)
    else:
        with tempfile.TemporaryDirectory() as folder:
            timings = run(Path(folder), args.variants, args.seeds, args.epochs)
    analysis = timings["collect"] + timings["stats + tables"]
    print(f"{timings['trials']} trials, {timings['rows']} rows (written in {timings['write']:.1f} s)")
    print(f"collect {timings['collect']:.2f} s, stats + tables {timings['stats + tables']:.2f} s")
    print(f"total {analysis:.2f} s against a goal of {GOAL_S:.0f} s: ratio {analysis / GOAL_S:.2f}")


if __name__ == "__main__":
    main()
