"""Aggregate training throughput of trial packs (`mmn.pack.Pack`) of K members against one solo trial.

    python -m benchmarks.pack_throughput --device cuda --members 1,2,4,8,16 --seconds 3
    python -m benchmarks.pack_throughput --device cpu --members 1,2,4 --small --batch-size 8 --seconds 2
    python -m benchmarks.pack_throughput --device cuda --members 8 --linear bmm,conv,einsum,loop

K=1 "solo" is the plain solo step of mmn/train.py (model, cross entropy, optimizer, scheduler); each pack row is
one step of the fused model of K members (mmn/pack.py), each on its own batch, with the members' linear maps run by
each implementation of `mmn.model.kernels.grouped_linear` given to --linear. "release" is the same step of the
released model's structure (tests/helpers/release_baseline.py; the default model only). Random layers are off in
all of them. fp32 and, on CUDA, bf16 autocast; each row against solo and against the release, and the
peak memory of each setting.
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
from mmn.model.layers import DropPath
from mmn.pack import Pack
from mmn.schedule import warmup_cosine
from mmn.train import _make_optimizer
from tests.helpers.release_baseline import ReleaseBaseline

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


def _release_step(config: RunConfig, device: torch.device, batch: int, autocast):
    """The solo step of the released model's structure, random layers off as in the other rows."""
    torch.manual_seed(config.train.seed)
    model = ReleaseBaseline().to(device)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(module, DropPath):
            module.rate = 0.0
    return _step(model, config, device, batch, autocast)


def _solo_step(config: RunConfig, device: torch.device, batch: int, autocast, graphed: bool = False):
    """mmn/train.py's solo step; `graphed`: the model under torch.compile(mode="reduce-overhead") (CUDA graphs),
    for the launch-bound solo trial."""
    torch.manual_seed(config.train.seed)
    model = MMN(config.model).to(device)
    return _step(model, config, device, batch, autocast, torch.compile(model, mode="reduce-overhead") if graphed
                 else model)


def _step(model: torch.nn.Module, config: RunConfig, device: torch.device, batch: int, autocast, forward=None):
    """One training step of `model` (through `forward`, default the model) as mmn/train.py takes it: cross entropy,
    backward, its optimizer and schedule."""
    optimizer = _make_optimizer(model, config)
    scheduler = warmup_cosine(optimizer, 10**6, 0, 0.0, 0.0)
    x, index_t, labels = (t[0] for t in _batch(config, 1, batch, device))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
    forward = forward or model
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
    print(f"{'precision':9} {'setting':18} {'clips/s':>10} {'per member':>11} {'vs solo':>8} {'vs release':>10} "
          f"{'peak MiB':>9}")
    for name, autocast in precisions.items():
        def row(setting: str, rate: float, members: int = 1) -> None:
            versus = f"{rate / release:10.2f}" if release else f"{'-':>10}"
            print(f"{name:9} {setting:18} {rate:10.1f} {rate / members:11.1f} {rate / solo:8.2f} {versus} "
                  f"{_peak_mib(device):9.0f}", flush=True)

        def timed(step, clips: int) -> float:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            return _timed(step, device, args.seconds) * clips

        release = None if args.small else timed(_release_step(config, device, args.batch_size, autocast),
                                                args.batch_size)
        solo = timed(_solo_step(config, device, args.batch_size, autocast), args.batch_size)
        if release:
            row("release", release)
        row("solo", solo)
        if args.cuda_graphs and device.type == "cuda":
            try:
                row("solo graphed", timed(_solo_step(config, device, args.batch_size, autocast, graphed=True),
                                          args.batch_size))
            except Exception as error:  # any failure to compile or capture: report it, keep the eager figures
                print(f"{name:9} solo graphed: not measured ({type(error).__name__}: {str(error)[:120]})")
        for linear in linears:
            kernels.GROUPED_LINEAR = linear
            for k in sizes:
                if k == 1 and linear != linears[0]:
                    continue  # a pack of one has no grouped products
                setting = f"pack of {k}" + (f" {linear}" if len(linears) > 1 and k > 1 else "")
                try:
                    rate = timed(_pack_step(config, k, device, args.batch_size, autocast), args.batch_size * k)
                except torch.OutOfMemoryError:
                    print(f"{name:9} {setting:18} out of memory")
                    break
                except RuntimeError as error:  # an implementation this device cannot run: say so, time the others
                    print(f"{name:9} {setting:18} failed: {str(error).splitlines()[0][:100]}")
                    break
                row(setting, rate, k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
