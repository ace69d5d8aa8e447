"""How many MMN trials share one GPU well: aggregate training throughput of K processes on one GPU.

    python -m benchmarks.gpu_sharing [--trials 1,2,4,8] [--seconds 20] [--batch 64] [--amp] [key=value ...]

Each process stands for one Tune trial with `--gpus-per-trial 1/K`: it builds the model (the release's default, or
the variant that the key=value overrides name, as in `python -m mmn.train`), and runs training steps (forward, loss,
backward, AdamW) on one fixed batch for the given seconds once every process is ready. The printout is clips/s
summed over the K processes, its ratio to one process alone, and the peak GPU memory of one process; the K past
which the sum stops rising is the fraction to use. Data loading is left out: it runs on the trial's CPUs.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import torch

from mmn.config import RunConfig, apply_overrides, parse_assignments


def _worker(overrides: dict, batch: int, seconds: float, amp: bool, barrier, results) -> None:
    from mmn.model import MMN

    config = apply_overrides(RunConfig(), overrides).model
    device = torch.device("cuda")
    model = MMN(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    x = torch.randn(batch, config.in_channels, config.num_frames, config.num_joints, config.num_persons, device=device)
    index_t = torch.linspace(-1, 1, config.num_frames, device=device).expand(batch, -1)
    labels = torch.randint(0, config.num_classes, (batch,), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x, index_t), labels, label_smoothing=0.1)
        loss.backward()
        optimizer.step()

    for _ in range(5):  # warm-up: cuDNN autotuning and the allocator's first growth
        step()
    torch.cuda.synchronize()
    barrier.wait()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
        if steps % 10 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    results.put((steps * batch / elapsed, torch.cuda.max_memory_allocated() / 2**30))


def measure(trials: int, overrides: dict, batch: int, seconds: float, amp: bool) -> tuple[float, float]:
    """Clips/s summed over `trials` processes training at once on one GPU, and one process's peak memory (GiB)."""
    context = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, results = context.Barrier(trials), context.Queue()
    workers = [context.Process(target=_worker, args=(overrides, batch, seconds, amp, barrier, results))
               for _ in range(trials)]
    for worker in workers:
        worker.start()
    measured = [results.get(timeout=seconds + 600) for _ in workers]
    for worker in workers:
        worker.join()
    return sum(rate for rate, _ in measured), max(memory for _, memory in measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", default="1,2,4,8", help="comma-separated numbers of processes to try")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast, as train.amp=true")
    parser.add_argument("overrides", nargs="*", help="model.key=value, as for python -m mmn.train")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA device")
    overrides = parse_assignments(args.overrides)
    print(f"{torch.cuda.get_device_name()}, batch {args.batch}, {'bf16 autocast' if args.amp else 'fp32'}, "
          f"{args.seconds:.0f} s per setting, overrides {overrides or 'none'}", flush=True)
    alone = None
    for trials in (int(k) for k in args.trials.split(",")):
        total, memory = measure(trials, overrides, args.batch, args.seconds, args.amp)
        alone = alone or total / trials
        print(f"{trials} trial(s) on one GPU: {total:8.1f} clips/s in all, {total / trials:8.1f} each, "
              f"{total / alone:4.2f}x one alone; peak memory {memory:.2f} GiB per trial", flush=True)


if __name__ == "__main__":
    main()
