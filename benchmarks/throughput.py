"""Train-step and eval throughput of the default MA-52 model, ours against the release's structure.

    python -m benchmarks.throughput [--batch 32] [--threads 2] [--repeats 5] [--device cuda [--amp]]

Train step: batch 32, fp32, forward + label-smoothing loss + backward + AdamW step. Eval: the forward in
inference mode; on a CPU ours includes `fuse_for_inference` of its current weights (the release structure runs
unfused, as the reference). Both models are timed in the same process, alternating, so a busy machine slows both
alike; the ratio is the figure that matters. The release's own figures (11.6 train / 42 eval clips/s,
docs/spec-mmn.md) came from another host and are printed for reference only. On a GPU (`--device cuda`) the same
comparison runs in fp32 with TF32 off, or under bf16 autocast with `--amp`.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from mmn.model import MMN, fuse_for_inference
from mmn.profile import seconds
from mmn.runtime import tune_cpu_allocator
from tests.helpers.release_baseline import ReleaseBaseline

RELEASE_QUOTED = {"train": 11.6, "eval": 42.0}


def _inputs(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2, 64, 44, 1, generator=generator)
    index_t = torch.rand(batch, 64, generator=generator) * 2 - 1
    labels = torch.randint(0, 52, (batch,), generator=generator)
    return x.to(device), index_t.to(device), labels.to(device)


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch, autocast) -> None:
    x, index_t, labels = batch
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        loss = torch.nn.functional.cross_entropy(model(x, index_t), labels, label_smoothing=0.1)
    loss.backward()
    optimizer.step()


def measure(models: dict[str, torch.nn.Module], batch_size: int, repeats: int,
            device: torch.device = torch.device("cpu"), amp: bool = False) -> dict[str, dict[str, float]]:
    batch = _inputs(batch_size, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1) for name, m in models.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"train": [], "eval": []} for name in models}

    def evaluate(model: torch.nn.Module) -> None:
        with torch.inference_mode(), autocast:
            # On a CPU ours is folded from its current weights inside the timing, as mmn.train.predict does.
            fused = isinstance(model, MMN) and device.type == "cpu"
            (fuse_for_inference(model) if fused else model)(batch[0], batch[1])

    for round_ in range(repeats + 1):  # round 0 warms up
        for name, model in models.items():
            model.train()
            train_time = seconds(lambda: _train_step(model, optimizers[name], batch, autocast), device)
            model.eval()
            eval_time = seconds(lambda: evaluate(model), device)
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
    parser.add_argument("--device", default="cpu", help="cpu (the goal's setting) or cuda")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.amp and device.type != "cuda":
        parser.error("--amp needs --device cuda")
    # fp32 means fp32 on a GPU too: TF32 would round matmuls and convolutions to 10-bit mantissas.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(args.threads)
    # The allocator tuning that mmn.train applies, here for both models: the ratio compares the model code alone.
    allocator = tune_cpu_allocator()
    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {"release": ReleaseBaseline().to(device), "ours": MMN().to(device)}
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{args.threads} threads, {torch.backends.cpu.get_cpu_capability()}, allocator tuned: {allocator}")
    print(f"batch {args.batch}, {'bf16 autocast' if args.amp else 'fp32'}, median of {args.repeats} steps, "
          f"{torch.__version__}, {where}")
    results = measure(models, args.batch, args.repeats, device, args.amp)
    for name, per in results.items():
        print(f"{name:>14}: train {per['train']:6.1f} clips/s   eval {per['eval']:6.1f} clips/s")
    for mode in ("train", "eval"):
        print(f"ours / release ({mode}): {results['ours'][mode] / results['release'][mode]:.2f}x   (goal >= 1.5x)")
    if device.type == "cpu":  # the spec's figures are CPU figures
        print(f"release figures quoted from another host: train {RELEASE_QUOTED['train']} / eval "
              f"{RELEASE_QUOTED['eval']} clips/s; ours / quoted: train "
              f"{results['ours']['train'] / RELEASE_QUOTED['train']:.2f}x, eval "
              f"{results['ours']['eval'] / RELEASE_QUOTED['eval']:.2f}x")


if __name__ == "__main__":
    main()
