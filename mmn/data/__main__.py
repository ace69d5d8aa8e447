"""Command line for the data package: `python -m mmn.data synth --out DIR` writes the synthetic set, and
`python -m mmn.data check DIR` reads a data folder the way training will and reports what it holds (exit status 0:
training would accept it, 1: it would not, 2: a usage error)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

from mmn.data.check import check_folder, format_report
from mmn.data.formats import FORMATS
from mmn.data.safe_pickle import load_pickle
from mmn.data.synthetic import DEFAULT_CLIPS_PER_CLASS, SPLITS, generate
from mmn.layouts import BENCHMARKS, LayoutError, data_layout


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _output_folder(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return path


EXAMPLES = """examples:
  python -m mmn.data synth --out data/synthetic
  python -m mmn.data synth --out data/long_tail --seed 3 --long-tail --clips-per-class 80
  mmn-ablate data synth --out data/synthetic
  python -m mmn.data check /data/ma52
  python -m mmn.data check /data/imigue --dataset imigue
  python -m mmn.data check /data/coco17_clips.pkl --layout coco17 --json
  mmn-ablate data check /data/ma52
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmn.data", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mmn-ablate {metadata.version('mmn-ablate')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    synth = commands.add_parser("synth", help="write the synthetic MA-52-layout set in the release's pickle format",
                                description="Write <split>_data.pkl and <split>_label.pkl for train, val and test "
                                            "(test keeps its labels) into --out.")
    synth.add_argument("--out", required=True, type=_output_folder, help="folder to write into (created if missing)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    synth.add_argument("--clips-per-class", type=_positive_int, default=DEFAULT_CLIPS_PER_CLASS,
                       help=f"train clips per class; val and test get a quarter (default {DEFAULT_CLIPS_PER_CLASS})")
    synth.add_argument("--long-tail", action="store_true",
                       help="long-tailed class frequencies in the train split, like MA-52's")
    check = commands.add_parser(
        "check", help="read a data folder the way training will and report what it holds",
        description="Per split: clip counts (next to MA-52's), classes and their counts, frame lengths, joints and "
                    "coordinate channels, all-zero clips, clips in two splits, and how long reading and "
                    "preprocessing took; every problem names the clip. Exit status 0: training would accept the "
                    "folder; 1: it would not; 2: a usage error.")
    check.add_argument("root", metavar="DIR", help="the data folder (or PYSKL .pkl file), as data.root takes it")
    check.add_argument("--dataset", choices=BENCHMARKS, default="ma52",
                       help="whose skeleton and classes (default ma52), as data.dataset")
    check.add_argument("--layout", metavar="FILE", help="a layout file or shipped layout's name (e.g. coco17), as "
                                                        "data.layout: its skeleton, and its classes if it names any")
    check.add_argument("--format", choices=("auto", *FORMATS), default="auto", help="as data.format (default auto)")
    check.add_argument("--json", action="store_true", help="print the report as JSON, every problem listed")
    return parser


def _check(args: argparse.Namespace) -> int:
    if not Path(args.root).exists():
        print(f"error: {args.root} does not exist; name the folder (or PYSKL .pkl file) that holds the data",
              file=sys.stderr)
        return 2
    try:
        layout = data_layout(args.dataset, args.layout)
    except LayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = check_folder(args.root, layout, args.format)
    print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
    return 0 if report.accepted else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args)
    started = time.perf_counter()
    out = generate(args.out, seed=args.seed, clips_per_class=args.clips_per_class, long_tail=args.long_tail)
    seconds = time.perf_counter() - started
    print(f"wrote {out} in {seconds:.1f} s (seed {args.seed}, {args.clips_per_class} train clips per class"
          f"{', long-tailed' if args.long_tail else ''})")
    for split in SPLITS:
        labels = Counter(record["label"] for record in load_pickle(out / f"{split}_label.pkl"))
        print(f"  {split:5s} {sum(labels.values()):6d} clips, {len(labels)} classes, "
              f"{min(labels.values())}-{max(labels.values())} per class")
    return 0


if __name__ == "__main__":
    sys.exit(main())
