"""Cost of an MMN variant: parameters, forward GFLOPs per clip, train and eval throughput.

    python -m mmn.profile [--dataset ma52|imigue] [--batch 32] [--threads N] [--steps 3] [--no-throughput]
                          [--json] [--print-config] [model.KEY=VALUE ...]

model.KEY=VALUE pairs set ModelConfig fields, the same dotted keys as mmn.train and ablations.run take, e.g.
`model.msm=graph model.depth=2 model.pos_enc=none` (mmn.cli holds the command line's parser). Parameters and
GFLOPs are cheap (the FLOPs come from a weightless forward pass on the meta device) and are the columns of the
ablation tables; throughput runs real training steps and takes seconds to minutes.
"""
from __future__ import annotations

if __name__ == "__main__":  # --help answers before torch loads (the parser needs none)
    from mmn.cli import answer_help_early, profile_parser

    answer_help_early(profile_parser)

import copy
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .cli import profile_parser
from .config import check_value, parse_assignments
from .layouts import get_layout
from .model import MMN, ConfigError, ModelConfig, fuse_for_inference
from .model.registry import import_user_modules
from .pack import Pack
from .runtime import num_threads
from .suggest import closest


def _model(model_or_config: nn.Module | ModelConfig) -> nn.Module:
    return MMN(model_or_config) if isinstance(model_or_config, ModelConfig) else model_or_config


def _config(model_or_config: nn.Module | ModelConfig) -> ModelConfig:
    if isinstance(model_or_config, ModelConfig):
        return model_or_config
    config = getattr(model_or_config, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError("expected a ModelConfig or a model with a ModelConfig in its .config attribute")
    return config


def _inputs(config: ModelConfig, batch_size: int,
            device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed random clip batch (x, index_t, labels) in the release's input layout."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, config.in_channels, config.num_frames, config.num_joints, config.num_persons,
                    generator=generator)
    index_t = torch.rand(batch_size, config.num_frames, generator=generator) * 2 - 1
    labels = torch.randint(0, config.num_classes, (batch_size,), generator=generator)
    return x.to(device), index_t.to(device), labels.to(device)


def count_parameters(model_or_config: nn.Module | ModelConfig) -> int:
    """Number of parameters (buffers such as BatchNorm statistics are not counted)."""
    return sum(p.numel() for p in _model(model_or_config).parameters())


def count_gflops(model_or_config: nn.Module | ModelConfig) -> float:
    """Forward GFLOPs of one clip in eval mode, as torch.utils.flop_counter counts them (2 per multiply-add).

    The pass runs on a weightless copy on the meta device: FLOPs depend only on shapes, so nothing is computed
    and the caller's model is left untouched.
    """
    config = _config(model_or_config)
    own = MMN(config) if isinstance(model_or_config, ModelConfig) else copy.deepcopy(model_or_config)
    meta = own.to("meta").eval()
    x, index_t, _ = _inputs(config, 1, "meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x, index_t)
    return counter.get_total_flops() / 1e9


def seconds(work: Callable[[], None], device: torch.device) -> float:
    """Wall time of `work`; on a GPU, from an idle queue until its kernels have finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _clips_per_s(step: Callable[[], object], device: torch.device, steps: int, clips: int) -> float:
    """`clips` per step over the median of `steps` timed steps; the first step, untimed, warms up allocator and
    kernels."""
    times = [seconds(step, device) for _ in range(steps + 1)]
    return clips / statistics.median(times[1:])


def measure_throughput(model_or_config: nn.Module | ModelConfig, batch_size: int = 32, threads: int | None = None,
                       steps: int = 3) -> dict[str, float]:
    """Clips per second in training (forward, label-smoothing CE, backward, AdamW step) and in inference.

    Inference is timed as evaluation runs it: on a CPU, `fuse_for_inference` of the current weights, then the
    forward.

    Each figure is the median over `steps` timed steps after one warm-up step. A given model is trained for
    those steps (its weights change), so pass a config, or a model you no longer need.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    model = _model(model_or_config)
    config = _config(model_or_config)
    device = next(model.parameters()).device
    x, index_t, labels = _inputs(config, batch_size, device)
    was_training = model.training
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x, index_t), labels, label_smoothing=0.1)
        loss.backward()
        optimizer.step()

    def eval_step() -> None:  # folded from the current weights each time, as mmn.train.predict does
        with torch.inference_mode():
            (fuse_for_inference(model) if device.type == "cpu" else model)(x, index_t)

    def clips_per_s(step: Callable[[], object]) -> float:
        return _clips_per_s(step, device, steps, batch_size)

    with num_threads(threads):
        try:
            model.train()
            train = clips_per_s(train_step)
            model.eval()
            evaluation = clips_per_s(eval_step)
        finally:
            model.train(was_training)
    return {"train_clips_per_s": train, "eval_clips_per_s": evaluation}


def measure_pack_throughput(config: ModelConfig, members: int, batch_size: int = 32, threads: int | None = None,
                            steps: int = 3) -> dict[str, float]:
    """Clips per second of a trial pack of `members` models of `config` (mmn.pack), all members together, each on
    its own batch of `batch_size`: training (one fused step with an AdamW per member) and inference (the fused
    forward in eval mode). Medians over `steps` timed steps after one warm-up step."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    models = [MMN(config) for _ in range(members)]
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1) for m in models]
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda step: 1.0) for o in optimizers]
    # each member its own random stream, as mmn.train.fit_pack gives them
    pack = Pack(models, optimizers, schedulers, [0.1] * members,
                [torch.Generator().manual_seed(k) for k in range(members)])
    inputs = [_inputs(config, batch_size, torch.device("cpu")) for _ in range(members)]
    x, index_t, labels = (torch.stack(parts) for parts in zip(*inputs))
    device = torch.device("cpu")

    def clips_per_s(step: Callable[[], object]) -> float:
        return _clips_per_s(step, device, steps, members * batch_size)

    with num_threads(threads):
        train = clips_per_s(lambda: pack.step(x, index_t, labels))
        evaluation = clips_per_s(lambda: pack.eval_logits(x, index_t))
    return {"train_clips_per_s": train, "eval_clips_per_s": evaluation}


def profile_model(config: ModelConfig, batch_size: int = 32, threads: int | None = None,
                  steps: int = 3, members: int = 1) -> dict[str, float]:
    """params, gflops (per clip), train_clips_per_s and eval_clips_per_s of the model `config` builds; with
    `members` > 1, the throughput of a trial pack of that many (all members together)."""
    measured = (measure_throughput(config, batch_size=batch_size, threads=threads, steps=steps) if members == 1
                else measure_pack_throughput(config, members, batch_size=batch_size, threads=threads, steps=steps))
    return {"params": count_parameters(config), "gflops": count_gflops(config), **measured}


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """key=value strings → ModelConfig overrides; a ValueError names a malformed pair or the nearest valid key."""
    overrides = parse_assignments(list(pairs))
    valid = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in overrides:
        if key not in valid:
            close = closest(key, valid)
            hint = f"did you mean {close}?" if close else f"valid keys: {', '.join(valid)}"
            raise ConfigError(f"unknown model option {key!r}; {hint}")
    return overrides


def build_config(dataset: str, overrides: dict[str, Any]) -> ModelConfig:
    """The dataset's joints and classes, then the overrides; a ConfigError says what is wrong."""
    layout = get_layout(dataset)
    return ModelConfig(**{"num_joints": layout.num_joints, "num_classes": layout.num_classes, **overrides})


def format_table(config: ModelConfig, result: dict[str, float], batch_size: int, threads: int,
                 members: int = 1) -> str:
    defaults = ModelConfig().to_dict()
    changed = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
    rows = [("parameters", f"{result['params']:,}"), ("GFLOPs / clip", f"{result['gflops']:.3f}")]
    if "train_clips_per_s" in result:
        rows += [("train clips/s", f"{result['train_clips_per_s']:.1f}"),
                 ("eval clips/s", f"{result['eval_clips_per_s']:.1f}")]
    width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    header = "MMN " + (" ".join(f"{k}={v}" for k, v in changed.items()) or "(release defaults)")
    lines = [header] + [f"  {name:<{width}}  {value:>{value_width}}" for name, value in rows]
    if "train_clips_per_s" in result:
        pack = f"a trial pack of {members} members, all together; " if members > 1 else ""
        lines.append(f"  ({pack}batch {batch_size}{' each' if members > 1 else ''}, fp32, {threads} threads, median "
                     f"after a warm-up step)")
    return "\n".join(lines)


def _model_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """model.KEY=VALUE pairs → ModelConfig fields; any other key is the error mmn.train gives for it. A bare field
    name (msm=graph, this command's earlier syntax) still works, with a warning."""
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    overrides = {}
    for pair in pairs:
        ((key, value),) = parse_assignments([pair]).items()
        if key in model_fields:
            print(f"warning: {pair} is deprecated; write model.{pair}", file=sys.stderr)
            key = f"model.{key}"
        value = check_value(key, value)
        section, _, name = key.partition(".")
        if section != "model":
            raise ConfigError(f"{key}: mmn.profile measures the model alone and takes model.* keys only, "
                              f"e.g. model.depth=2")
        overrides[name] = value
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = profile_parser().parse_intermixed_args(argv)
    try:
        import_user_modules(args.imports)  # before the config: it may name the modules they register
        config = build_config(args.dataset, _model_overrides(args.overrides))
    except ValueError as error:  # ConfigError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump({"model": config.to_dict()}, sort_keys=False), end="")
        return 0
    if args.no_throughput:
        result: dict[str, float] = {"params": count_parameters(config), "gflops": count_gflops(config)}
    else:
        result = profile_model(config, batch_size=args.batch, threads=args.threads, steps=args.steps,
                               members=args.members)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(config, result, args.batch, args.threads or torch.get_num_threads(), args.members))
    return 0


if __name__ == "__main__":
    sys.exit(main())
