"""Train-step and eval throughput of the default MA-52 model, ours against the release's structure.

    python benchmarks/throughput.py [--batch 32] [--threads 2] [--repeats 5] [--compile]

Train step: batch 32, fp32, forward + label-smoothing loss + backward + AdamW step. Both models are timed in the
same process, alternating, so a busy machine slows both alike; the ratio is the figure that matters. The
release's own figures (11.6 train / 42 eval clips/s, SPEC-mmn.md) came from another host and are printed for
reference only.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from release_baseline import ReleaseBaseline  # noqa: E402

from mmn.model import MMN  # noqa: E402
from mmn.runtime import tune_cpu_allocator  # noqa: E402

RELEASE_QUOTED = {"train": 11.6, "eval": 42.0}


def _inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2, 64, 44, 1, generator=generator)
    index_t = torch.rand(batch, 64, generator=generator) * 2 - 1
    return x, index_t, torch.randint(0, 52, (batch,), generator=generator)


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch) -> None:
    x, index_t, labels = batch
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x, index_t), labels, label_smoothing=0.1)
    loss.backward()
    optimizer.step()


def measure(models: dict[str, torch.nn.Module], batch_size: int, repeats: int) -> dict[str, dict[str, float]]:
    batch = _inputs(batch_size)
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1) for name, m in models.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"train": [], "eval": []} for name in models}
    for round_ in range(repeats + 1):  # round 0 warms up
        for name, model in models.items():
            model.train()
            start = time.perf_counter()
            _train_step(model, optimizers[name], batch)
            train_time = time.perf_counter() - start
            model.eval()
            with torch.inference_mode():
                start = time.perf_counter()
                model(batch[0], batch[1])
                eval_time = time.perf_counter() - start
            if round_:
                times[name]["train"].append(train_time)
                times[name]["eval"].append(eval_time)
    return {name: {mode: batch_size / statistics.median(ts) for mode, ts in per.items()}
            for name, per in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of our model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The allocator tuning that mmn.train applies, here for both models: the ratio compares the model code alone.
    allocator = tune_cpu_allocator()
    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {"release": ReleaseBaseline(), "ours": MMN()}
    if args.compile:
        models["ours+compile"] = torch.compile(MMN())
    print(f"batch {args.batch}, fp32, {args.threads} threads, median of {args.repeats} steps, "
          f"{torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, allocator tuned: {allocator}")
    results = measure(models, args.batch, args.repeats)
    for name, per in results.items():
        print(f"{name:>14}: train {per['train']:6.1f} clips/s   eval {per['eval']:6.1f} clips/s")
    for name in results:
        if name == "release":
            continue
        for mode in ("train", "eval"):
            ratio = results[name][mode] / results["release"][mode]
            print(f"{name} / release ({mode}): {ratio:.2f}x   (goal >= 1.5x)")
    print(f"release figures quoted from another host: train {RELEASE_QUOTED['train']} / eval "
          f"{RELEASE_QUOTED['eval']} clips/s; ours / quoted: train "
          f"{results['ours']['train'] / RELEASE_QUOTED['train']:.2f}x, eval "
          f"{results['ours']['eval'] / RELEASE_QUOTED['eval']:.2f}x")


if __name__ == "__main__":
    main()
