"""A rehearsal of the paper path at MA-52's scale, on the built-in generator: data, one paper-budget trial, the test split.

    python -m benchmarks.paper_rehearsal [--out DIR] [--steps N] [--threads N]

1. Generates a synthetic set of MA-52's size and shape (11,250 train, 5,586 val and 5,586 test clips; train classes
   from 1,283 down to 6 clips) into DIR/data, unless it is there already.
2. Prepares each split as a training worker does (reading and preprocessing the files), timed.
3. Runs one paper-budget trial of the reference MMN for one epoch through `ablations.run` (Ray Tune, as on a
   cluster; the GPU when there is one). On a CPU a whole epoch takes hours: `--steps N` trains N steps of it (the
   epoch time printed is then extrapolated to the whole epoch, and says so). The val split is evaluated in full.
4. Evaluates the trial's best weights on the test split with `ablations.evaluate`.

It prints the data preparation time, the trial's peak memory (the Ray worker's resident set, and the GPU's),
the share of a training step spent making batches (goal at most 5%), the epoch time and the test evaluation time.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

SPEC = """\
name: rehearsal
description: One paper-budget trial of the reference MMN (benchmarks/paper_rehearsal.py).
factors:
  model.msm: {values: [released], label: MSM}
seeds: 1
"""
DATA_SHARE_GOAL = 0.05


def make_data(root: Path) -> float:
    """The MA-52-sized set in `root` (generated unless complete); seconds spent generating."""
    from mmn.data.synthetic import MANIFEST, generate, ma52_sized_counts

    if (root / MANIFEST).is_file():
        return 0.0
    started = time.perf_counter()
    generate(root, counts=ma52_sized_counts())
    return time.perf_counter() - started


def prepare_splits(root: Path) -> dict[str, tuple[int, float]]:
    """Clips and seconds to read and preprocess each split, as a training worker does once per data set."""
    from mmn.config import RunConfig
    from mmn.data import SkeletonDataset

    frames = RunConfig().model.num_frames
    prepared = {}
    for split in ("train", "val", "test"):
        started = time.perf_counter()
        dataset = SkeletonDataset(root, split=split, num_frames=frames)
        prepared[split] = (len(dataset), time.perf_counter() - started)
    return prepared


def find_result(run: Path) -> dict:
    from mmn.folders import RESULT

    for path in run.rglob(RESULT):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "config_hash" in record:
            return {**record, "_dir": str(path.parent)}
    raise SystemExit(f"no trial result under {run}: the trial did not run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="working folder (default: a new temporary one); the data set is reused")
    parser.add_argument("--steps", type=int, default=0, help="train only N steps of the epoch (for a CPU)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per trial (default: the machine's)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="rehearsal"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    generated = make_data(out / "data")
    print(f"data: {out / 'data'} ({'generated in %.0f s' % generated if generated else 'already there'})")
    for split, (clips, seconds) in prepare_splits(out / "data").items():
        print(f"  {split:<5} {clips:6d} clips prepared in {seconds:5.1f} s")

    from ablations import evaluate, run

    spec = out / "rehearsal.yaml"
    spec.write_text(SPEC)
    cpus = args.threads or os.cpu_count() or 1
    command = [str(spec), "--budget", "paper", "--epochs", "1", "--data-root", str(out / "data"),
               "--storage", str(out / "runs"), "--name", "rehearsal", "--cpus-per-trial", str(cpus)]
    if args.steps:
        command += ["--set", f"train.max_steps={args.steps}"]
    started = time.perf_counter()
    status = run.main(command)
    print(f"ablations.run: exit {status} in {time.perf_counter() - started:.0f} s")
    result = find_result(out / "runs" / "rehearsal")
    epoch = json.loads((Path(result["_dir"]) / "history.jsonl").read_text().splitlines()[0])

    started = time.perf_counter()
    status = evaluate.main([str(out / "runs" / "rehearsal"), "--split", "test"])
    evaluate_seconds = time.perf_counter() - started
    test = json.loads((Path(result["_dir"]) / "test_result.json").read_text())

    steps_done = args.steps or result["config"]["train"]["max_steps"] or None
    full_steps = 11_250 // result["config"]["train"]["batch_size"]
    train_seconds = epoch["time_s"] - 5_586 / epoch["eval_clips_per_s"]
    memory = result.get("peak_memory_mib", {})
    print(f"device: {result['hardware']['device']} {result['hardware'].get('gpu', '')}".rstrip())
    print(f"peak memory of the trial's worker: {memory.get('rss', '?')} MiB resident"
          + (f", {memory['gpu']} MiB on the GPU" if memory.get("gpu") else ""))
    share = epoch["data_share"]
    print(f"making batches: {100 * share:.1f}% of the training time (goal <= {100 * DATA_SHARE_GOAL:.0f}%)")
    print(f"training: {epoch['train_clips_per_s']:.1f} clips/s; val evaluation {epoch['eval_clips_per_s']:.1f} clips/s")
    if steps_done and steps_done < full_steps:
        whole = train_seconds * full_steps / steps_done + 5_586 / epoch["eval_clips_per_s"]
        print(f"epoch: {steps_done} of {full_steps} steps trained in {train_seconds:.0f} s; a whole epoch "
              f"(extrapolated) {whole / 60:.1f} min, val evaluation included")
    else:
        print(f"epoch: {epoch['time_s'] / 60:.1f} min, val evaluation included")
    print(f"ablations.evaluate --split test: exit {status} in {evaluate_seconds:.0f} s "
          f"({test['clips']} clips, test top1 {test['metrics']['test_top1'] if test['metrics'] else 'withheld'})")


if __name__ == "__main__":
    main()
