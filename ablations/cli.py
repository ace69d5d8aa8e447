"""`mmn-ablate COMMAND ...`: one console script for every command line of the project.

Each command forwards its arguments to the `main(argv)` of the module that `python -m` runs, so both forms take
the same arguments. Modules are imported only for the command that runs: `mmn-ablate --help` and `--version` load
neither Ray nor torch, and neither does a command's `--help` or `--version`: where the module needs torch, its parser
lives apart (mmn.cli) and answers alone.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from mmn.suggest import closest

# command → (module whose main(argv) runs it, what it does)
COMMANDS = {
    "run": ("ablations.run", "run an experiment spec on Ray Tune (python -m ablations.run)"),
    "report": ("analysis.report", "tables and plots of finished experiments (python -m analysis.report)"),
    "evaluate": ("ablations.evaluate", "evaluate every finished trial on a split (python -m ablations.evaluate)"),
    "train": ("mmn.train", "train one model, no Ray (python -m mmn.train)"),
    "profile": ("mmn.profile", "parameters, GFLOPs and throughput of a model (python -m mmn.profile)"),
    "data": ("mmn.data.__main__", "write the synthetic set, or check a data folder (python -m mmn.data)"),
}
# command → (module, function) of a parser built without torch or pandas: it answers --help and --version.
LIGHT_PARSERS = {"train": ("mmn.cli", "train_parser"), "profile": ("mmn.cli", "profile_parser"),
                 "report": ("analysis.cli", "report_parser")}

EXAMPLES = """commands:
{commands}

examples:
  mmn-ablate run --list
  mmn-ablate run msm_mtm train.epochs=4 --print-config
  mmn-ablate report runs/msm_mtm
  mmn-ablate train budget=quick model.msm=graph --quiet
  mmn-ablate profile --no-throughput model.depth=2
  mmn-ablate data check /data/ma52
  mmn-ablate COMMAND --help    (the command's own options)
"""


def version() -> str:
    """The installed distribution's version, as every command's --version prints it."""
    return f"mmn-ablate {metadata.version('mmn-ablate')}"


def build_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<9} {description}" for name, (_, description) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="mmn-ablate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Ablations of MMN on Ray Tune and Optuna: every command line of the project in one place.",
        epilog=EXAMPLES.format(commands=commands))
    parser.add_argument("--version", action="version", version=version())
    parser.add_argument("command", nargs="?", metavar="COMMAND", help=f"one of {', '.join(COMMANDS)}")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="...", help="the command's own arguments")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in COMMANDS:
        parser.print_usage(sys.stderr)
        close = closest(args.command, COMMANDS) if args.command else None
        problem = f"unknown command {args.command!r}" if args.command else "name a command"
        print(f"error: {problem}{f' (did you mean {close}?)' if close else ''}; choose one of "
              f"{', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if args.command in LIGHT_PARSERS and _about_itself(args.args):
        module, parser = LIGHT_PARSERS[args.command]
        getattr(importlib.import_module(module), parser)().parse_args(args.args)  # prints and exits
    module = importlib.import_module(COMMANDS[args.command][0])
    return module.main(args.args)


def _about_itself(argv: list[str]) -> bool:
    """Whether a command's arguments ask for its help or version (before any `--`)."""
    options = argv[:argv.index("--")] if "--" in argv else argv
    return any(arg in ("-h", "--help", "--version") for arg in options)


if __name__ == "__main__":
    sys.exit(main())
