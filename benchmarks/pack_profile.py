"""Where a trial pack's training step spends its time, against the solo step: torch.profiler's top operators.

    python -m benchmarks.pack_profile --device cuda --members 1,4
    python -m benchmarks.pack_profile --device cpu --members 1 --small --batch-size 8

For finding where a pack step (one step of the fused model of K members, mmn/pack.py) spends more than K solo
steps would. Prints, per setting, the operators with the most device time (CPU time on a CPU) over a few profiled
steps, and any warning the step gave. --linear picks the implementation of the members' linear maps
(`mmn.model.kernels.GROUPED_LINEAR`).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.pack_throughput import _config, _pack_step, _solo_step, _sync
from mmn.config import apply_overrides
from mmn.model import kernels


def _profiled(step, device: torch.device, steps: int, rows: int) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step(), step()
        _sync(device)
    for message in sorted({str(w.message).splitlines()[0][:160] for w in caught}):
        print(f"  warning: {message}")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--members", default="1,4", help="comma-separated pack sizes K")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per member per step")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per setting")
    parser.add_argument("--rows", type=int, default=25, help="operators listed per setting")
    parser.add_argument("--small", action="store_true", help="the tiny test model instead of MMN's default")
    parser.add_argument("--linear", default=kernels.GROUPED_LINEAR, choices=sorted(kernels.GROUPED_LINEARS),
                        help="implementation of the members' linear maps")
    args = parser.parse_args(argv)
    kernels.GROUPED_LINEAR = args.linear
    device = torch.device(args.device)
    config = apply_overrides(_config(args.small, 0), {"model.drop_path": 0.0, "model.fusion_dropout": 0.0,
                                                      "model.head_dropout": 0.0})
    print(f"== solo step, batch {args.batch_size}")
    _profiled(_solo_step(config, device, args.batch_size, contextlib.nullcontext), device, args.steps, args.rows)
    for k in (int(k) for k in args.members.split(",")):
        print(f"== pack of {k}, batch {args.batch_size} per member")
        _profiled(_pack_step(config, k, device, args.batch_size, contextlib.nullcontext), device, args.steps,
                  args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
