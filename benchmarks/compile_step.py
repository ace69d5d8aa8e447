"""Training throughput of a short solo `fit`, eager against `train.compile=on` (issue #17), fp32 and, on CUDA, bf16.

    python -m benchmarks.compile_step                   # the paper model on CUDA: 3 epochs of 20 steps each
    python -m benchmarks.compile_step --device cpu --small --epochs 2 --max-steps 2

Each setting is one real `fit` (mmn.train) on the built-in synthetic set, evaluated each epoch as a trial is. Its
first epoch compiles (and warms up the eager run alike), so it is left out: the clips/s figure is the mean of the
records' train_clips_per_s over the later epochs. "epoch 1 s" is the first epoch's wall time, compiling included.
A line prints as each fit ends (compiling the paper model can take minutes); a compiled line has its ratio to the
eager one above it. A compile that fails falls back to eager training (mmn.compiled); the line then says so and why.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import torch

from mmn.config import RunConfig, apply_overrides, with_budget
from mmn.train import fit

# The tiny model of the CPU tests (benchmarks/pack_throughput.py), for trying the script without a GPU.
SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "model.num_frames": 8,
         "data.synthetic_clips_per_class": 4, "train.batch_size": 8}


def _config(small: bool, device: str, epochs: int, max_steps: int, amp: bool, compile_: str) -> RunConfig:
    config = with_budget(RunConfig(), "quick") if small else with_budget(RunConfig(), "paper")
    return apply_overrides(config, {**(SMALL if small else {}), "train.epochs": epochs, "train.warmup_epochs": 0,
                                    "train.max_steps": max_steps, "train.device": device, "train.amp": amp,
                                    "train.compile": compile_})


def _run(config: RunConfig) -> dict[str, Any]:
    """The fit's later epochs' mean training clips/s, its first epoch's seconds, and whether it ran compiled (an
    eager fit's record, train.compile=off, says nothing of it)."""
    records: list[dict[str, Any]] = []
    result = fit(config, on_epoch=lambda record, _: records.append(record), progress=False)
    return {"rate": statistics.mean(r["train_clips_per_s"] for r in records[1:]), "first": records[0]["time_s"],
            "compiled": result.get("compiled", False), "error": result.get("compile_error")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit, the first untimed (at least 2)")
    parser.add_argument("--max-steps", type=int, default=20, help="training steps per epoch")
    parser.add_argument("--small", action="store_true", help="the tiny test model instead of the paper model")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 or both (bf16 on CUDA only)")
    args = parser.parse_args(argv)
    precisions = args.precisions.split(",")
    if args.epochs < 2 or args.max_steps < 1 or not set(precisions) <= {"fp32", "bf16"}:
        parser.error("--epochs takes 2 or more, --max-steps 1 or more, --precisions fp32, bf16 or fp32,bf16")
    if "bf16" in precisions and not args.device.startswith("cuda"):
        precisions.remove("bf16")  # train.amp is bf16 autocast on CUDA only
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"device {args.device} ({name}), {'small' if args.small else 'paper'} model, {args.epochs} epochs of "
          f"{args.max_steps} steps, first epoch untimed", flush=True)
    print(f"{'precision':9} {'step':9} {'clips/s':>9} {'vs eager':>8} {'epoch 1 s':>9}  compiled?", flush=True)
    for precision in precisions:
        eager = _run(_config(args.small, args.device, args.epochs, args.max_steps, precision == "bf16", "off"))
        print(f"{precision:9} {'eager':9} {eager['rate']:9.1f} {1.0:8.2f} {eager['first']:9.1f}", flush=True)
        compiled = _run(_config(args.small, args.device, args.epochs, args.max_steps, precision == "bf16", "on"))
        note = "yes" if compiled["compiled"] else f"no, fell back: {compiled['error']}"
        print(f"{precision:9} {'compiled':9} {compiled['rate']:9.1f} {compiled['rate'] / eager['rate']:8.2f} "
              f"{compiled['first']:9.1f}  {note}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
