"""The argument parsers of `python -m mmn.train` and `python -m mmn.profile`, apart from the modules that need torch,
so that `mmn-ablate train --help` and `mmn-ablate profile --help` answer at once (ablations/cli.py)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib import metadata

from .layouts import LAYOUTS

VERSION = f"mmn-ablate {metadata.version('mmn-ablate')}"

TRAIN_EXAMPLES = """examples:
  python -m mmn.train budget=quick
  python -m mmn.train budget=quick model.msm=graph train.epochs=4 --print-config
  python -m mmn.train --config my_run.yaml data.root=/data/ma52 --out runs/train/mine
  mmn-ablate train budget=quick train.lr=0.01 --quiet
"""

PROFILE_DESCRIPTION = """Cost of an MMN variant: parameters, forward GFLOPs per clip, train and eval throughput.

model.KEY=VALUE pairs set ModelConfig fields, the same dotted keys as mmn.train and ablations.run take, e.g.
`model.msm=graph model.depth=2 model.pos_enc=none`. Parameters and GFLOPs are cheap (the FLOPs come from a
weightless forward pass on the meta device) and are the columns of the ablation tables; throughput runs real
training steps and takes seconds to minutes.
"""

PROFILE_EXAMPLES = """examples:
  python -m mmn.profile --no-throughput model.msm=graph model.depth=2
  python -m mmn.profile --dataset imigue --batch 16 --threads 2 --json
  python -m mmn.profile model.embed_dim=64 --print-config
  mmn-ablate profile --no-throughput model.pos_enc=none
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmn.train", epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one MMN model with the release's protocol. Overrides are dotted keys, e.g. "
                    "model.msm=graph train.epochs=10 data.root=/data/ma52; `budget=quick` picks a named budget.")
    parser.add_argument("--config", help="a YAML or JSON file of config values (nested or dotted keys)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE",
                        help="a .py file or module that registers your own model modules (docs/custom.md); repeatable")
    parser.add_argument("--out", default=None, help="folder for checkpoints and results (default runs/train/<hash>)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration as YAML and "
                                                                    "exit without training")
    parser.add_argument("--version", action="version", version=VERSION)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def profile_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmn.profile", description=PROFILE_DESCRIPTION,
                                     epilog=PROFILE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="model.KEY=VALUE", help="ModelConfig fields to change")
    parser.add_argument("--dataset", choices=sorted(LAYOUTS), default="ma52",
                        help="sets num_joints and num_classes (default ma52)")
    parser.add_argument("--batch", type=_positive_int, default=32, help="clips per throughput step (default 32)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE",
                        help="a .py file or module that registers your own model modules (docs/custom.md); repeatable")
    parser.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--steps", type=_positive_int, default=3, help="timed steps per throughput figure (default 3)")
    parser.add_argument("--members", type=_positive_int, default=1,
                        help="throughput of a trial pack of this many members, all together (default 1: one model)")
    parser.add_argument("--no-throughput", action="store_true", help="only parameters and GFLOPs (fast)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved model configuration as YAML and exit without measuring")
    parser.add_argument("--version", action="version", version=VERSION)
    return parser


def answer_help_early(parser: Callable[[], argparse.ArgumentParser]) -> None:
    """Print --help or --version and exit, for `python -m mmn.train` and `python -m mmn.profile`, before those
    modules import torch (seconds): they call this first thing when run as a script."""
    if {"-h", "--help", "--version"} & set(sys.argv[1:]):
        parser().parse_intermixed_args()
