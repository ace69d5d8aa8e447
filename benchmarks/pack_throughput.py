"""Aggregate training throughput of trial packs (`mmn.pack.Pack`) of K members against one solo trial.

    python benchmarks/pack_throughput.py --device cuda --members 1,2,4,8,16 --seconds 3
    python benchmarks/pack_throughput.py --device cpu --members 1,2,4 --small --batch-size 8 --seconds 2
    python benchmarks/pack_throughput.py --device cuda --members 8 --linear bmm,conv,einsum,loop

K=1 "solo" is the plain solo step of mmn/train.py (model, cross entropy, optimizer, scheduler); each pack row is
one step of the fused model of K members (mmn/pack.py), each on its own batch, with the members' linear maps run by
each implementation of `mmn.model.kernels.grouped_linear` given to --linear. fp32 and, on CUDA, bf16 autocast; peak
memory per setting.
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time

import torch

from mmn.config import RunConfig, apply_overrides, with_budget
from mmn.model import MMN, kernels
from mmn.pack import Pack
from mmn.schedule import warmup_cosine
from mmn.train import _make_optimizer

SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "model.num_frames": 8}


def _config(small: bool, seed: int) -> RunConfig:
    config = with_budget(RunConfig(), "quick") if small else RunConfig()
    return apply_overrides(config, {**(SMALL if small else {}), "train.seed": seed})


def _member(config: RunConfig, device: torch.device):
    torch.manual_seed(config.train.seed)
    model = MMN(config.model).to(device)
    optimizer = _make_optimizer(model, config)
    return model, optimizer, warmup_cosine(optimizer, 10**6, 0, 0.0, 0.0)


def _batch(config: RunConfig, members: int, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    m = config.model
    x = torch.randn(members, batch, m.in_channels, m.num_frames, m.num_joints, m.num_persons, device=device)
    index_t = torch.linspace(-1, 1, m.num_frames + 1, device=device)[:-1].expand(members, batch, -1).contiguous()
    return x, index_t, torch.randint(0, m.num_classes, (members, batch), device=device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, device: torch.device, seconds: float) -> float:
    """Steps per second of `step` over about `seconds`, after two warm-up steps."""
    step(), step()
    _sync(device)
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    _sync(device)
    return steps / (time.perf_counter() - started)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # of the process so far


def _solo_step(config: RunConfig, device: torch.device, batch: int, autocast, graphed: bool = False):
    """mmn/train.py's solo step; `graphed`: the model under torch.compile(mode="reduce-overhead") (CUDA graphs),
    for the launch-bound solo trial."""
    model, optimizer, scheduler = _member(config, device)
    x, index_t, labels = (t[0] for t in _batch(config, 1, batch, device))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
    forward = torch.compile(model, mode="reduce-overhead") if graphed else model
    model.train()

    def step() -> None:
        with autocast():
            loss = loss_fn(forward(x, index_t), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return step


def _pack_step(config: RunConfig, members: int, device: torch.device, batch: int, autocast):
    built = [_member(_config_seed(config, k), device) for k in range(members)]
    pack = Pack([b[0] for b in built], [b[1] for b in built], [b[2] for b in built],
                [config.train.label_smoothing] * members,
                [torch.Generator(device).manual_seed(k) for k in range(members)])  # own streams, as fit_pack's
    x, index_t, labels = _batch(config, members, batch, device)

    def step() -> None:
        with autocast():
            pack.step(x, index_t, labels)
    return step


def _config_seed(config: RunConfig, seed: int) -> RunConfig:
    return apply_overrides(config, {"train.seed": seed})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--members", default="1,2,4,8,16", help="comma-separated pack sizes K")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per member per step")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per setting")
    parser.add_argument("--small", action="store_true", help="the tiny test model instead of MMN's default")
    parser.add_argument("--cuda-graphs", action="store_true", help="also time the solo step under CUDA graphs")
    parser.add_argument("--linear", default=kernels.GROUPED_LINEAR,
                        help=f"comma-separated implementations of the members' linear maps to time, of "
                             f"{', '.join(kernels.GROUPED_LINEARS)} (default {kernels.GROUPED_LINEAR})")
    args = parser.parse_args(argv)
    try:
        sizes = [int(k) for k in args.members.split(",")]
        device = torch.device(args.device)
    except (ValueError, RuntimeError) as error:
        parser.error(f"--members takes integers like 1,2,4 and --device a torch device: {error}")
    linears = args.linear.split(",")
    unknown = [name for name in linears if name not in kernels.GROUPED_LINEARS]
    if unknown:
        parser.error(f"--linear {','.join(unknown)}: choose from {', '.join(kernels.GROUPED_LINEARS)}")
    config = apply_overrides(_config(args.small, 0), {"model.drop_path": 0.0, "model.fusion_dropout": 0.0,
                                                      "model.head_dropout": 0.0})
    precisions = {"fp32": contextlib.nullcontext}
    if device.type == "cuda":
        precisions["bf16"] = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"batch {args.batch_size} per member, {'small' if args.small else 'default'} model")
    print(f"{'precision':9} {'setting':14} {'clips/s':>10} {'per member':>11} {'vs solo':>8} {'peak MiB':>9}")
    for name, autocast in precisions.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        solo = _timed(_solo_step(config, device, args.batch_size, autocast), device, args.seconds) * args.batch_size
        print(f"{name:9} {'solo':14} {solo:10.1f} {solo:11.1f} {1.0:8.2f} {_peak_mib(device):9.0f}", flush=True)
        if args.cuda_graphs and device.type == "cuda":
            try:
                graphed = _timed(_solo_step(config, device, args.batch_size, autocast, graphed=True), device,
                                 args.seconds) * args.batch_size
                print(f"{name:9} {'solo graphed':14} {graphed:10.1f} {graphed:11.1f} {graphed / solo:8.2f} "
                      f"{_peak_mib(device):9.0f}", flush=True)
            except Exception as error:  # any failure to compile or capture: report it, keep the eager figures
                print(f"{name:9} solo graphed: not measured ({type(error).__name__}: {str(error)[:120]})")
        for linear in linears:
            kernels.GROUPED_LINEAR = linear
            for k in sizes:
                if k == 1 and linear != linears[0]:
                    continue  # a pack of one has no grouped products
                setting = f"pack of {k}" + (f" {linear}" if len(linears) > 1 and k > 1 else "")
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                try:
                    rate = _timed(_pack_step(config, k, device, args.batch_size, autocast), device,
                                  args.seconds) * args.batch_size * k
                except torch.OutOfMemoryError:
                    print(f"{name:9} {setting:14} out of memory")
                    break
                print(f"{name:9} {setting:14} {rate:10.1f} {rate / k:11.1f} {rate / solo:8.2f} "
                      f"{_peak_mib(device):9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
