"""`python -m ablations.run NAME [key=value ...]`: run an experiment spec on Ray Tune and report where its results are.

Exit status: 0 when every trial finished, 1 when some failed (their reasons are listed), 2 for usage errors
(unknown experiment, bad option or spec, finished results of other code or data and no --rerun-stale or
--keep-stale), each with one line saying what to do.
"""
from __future__ import annotations

import argparse
import logging
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any

import yaml

# Light imports only: building the parser (--help, --version) must load neither Ray nor torch. What runs
# experiments is imported where it is needed.
from mmn.config import (BUDGETS, DATASETS, MODALITIES, ConfigError, IncompatibleOptions, RunConfig, apply_overrides,
                        check_value, flatten, parse_assignments, with_budget)
from mmn.data.formats import DataFormatError
from mmn.model.registry import RegistryError, import_user_modules

from .console import console
from .expand import base_overrides
from .loggers import TRACKERS
from .spec import (DEFAULT_GPUS_PER_TRIAL, SeedsUntilDecided, Spec, SpecError, check_seeds, check_seeds_until_decided,
                   list_specs, load_spec)

if TYPE_CHECKING:
    from .runner import Outcome, RunOptions

EXAMPLES = """examples:
  python -m ablations.run --list
  python -m ablations.run msm_mtm --dry-run
  python -m ablations.run msm_mtm train.epochs=4 model.depth=2 --print-config
  python -m ablations.run msm_mtm --budget paper --data-root /data/ma52 --seeds 3
  mmn-ablate run depth --samples 8 train.batch_size=16
"""


def _fraction(text: str) -> float:
    value = float(text)
    if value < 0 or (value > 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1] or a whole number of GPUs, got {text}")
    return value


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
        return value

    return parse


def _pack(text: str) -> str | int:
    """`--pack`: auto, off, or members per pack (1 is off)."""
    if text in ("auto", "off"):
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"takes auto, off or a number of members (e.g. 4), got {text!r}")


def _seeds(text: str) -> int | list[int] | SeedsUntilDecided:
    """`3` means seeds 1..3; `1,5,7` names them; `3..10` adds seeds 4..10 until decided (ablations.rounds); checked
    like a spec's `seeds:`."""
    if ".." in text:
        low, _, high = text.partition("..")
        if not (low.isdigit() and high.isdigit()):
            raise argparse.ArgumentTypeError(f"--seeds MIN..MAX takes two counts, e.g. 3..10, got {text}")
        until = check_seeds_until_decided({"min": int(low), "max": int(high), "until": "decided"})
        if isinstance(until, str):
            raise argparse.ArgumentTypeError(until)
        return until
    try:
        value: int | list[int] = [int(s) for s in text.split(",")] if "," in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (1,5,7), got {text}") from None
    seeds = check_seeds(value)
    if isinstance(seeds, str):
        raise argparse.ArgumentTypeError(seeds)
    return value


def _check_overrides(spec: Spec, options: RunOptions) -> None:
    """Each key=value override on its own (key, type, range), then everything every trial shares together: a
    conflict between options is the override's fault unless the variants set one of the options in conflict, in
    which case each variant is checked on its own when the trials are planned."""
    for key, value in options.overrides.items():
        check_value(key, value)  # its error names the key, as mmn.train's and mmn.profile's do
    try:
        apply_overrides(with_budget(RunConfig(), options.budget),
                        base_overrides(spec, options.budget, options.cli_overrides()))
    except IncompatibleOptions as error:
        named = [key for key in error.keys if key in options.overrides]
        if named and not set(error.keys) & spec.varied_keys().keys():
            raise ConfigError(f"{', '.join(f'{key}={options.overrides[key]}' for key in named)}: {error}") from None


def _warn_shadowed(spec: Spec, overrides: dict[str, Any]) -> None:
    """An override of a key that the variants themselves set loses in every trial: say so before running."""
    varied = spec.varied_keys()
    for key in overrides.keys() & varied.keys():
        print(f"warning: {key}={overrides[key]} has no effect: {spec.name} sets {key} through its "
              f"{varied[key]} in every variant it applies to", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ablations.run", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run an MMN ablation experiment on Ray Tune (Optuna picks the configurations).")
    parser.add_argument("experiment", nargs="?", help="experiment: a spec in ablations/ (see --list) or a path to one")
    parser.add_argument("assignments", nargs="*", metavar="key=value",
                        help="config override for every trial, a dotted key as in mmn.train, e.g. train.batch_size=16")
    parser.add_argument("--version", action="version", version=f"mmn-ablate {metadata.version('mmn-ablate')}")
    parser.add_argument("--list", action="store_true", help="list the shipped experiments and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the expanded trials and resources, run nothing")
    parser.add_argument("--print-config", action="store_true",
                        help="print the configuration every trial shares and each variant's differences as YAML, "
                             "run nothing")
    parser.add_argument("--budget", default="quick", choices=sorted(BUDGETS),
                        help="quick: built-in data on a CPU; paper: the release's protocol (default quick)")
    parser.add_argument("--dataset", choices=DATASETS, help="data set layout (default: the spec's, ma52)")
    parser.add_argument("--data-root", help="folder with real data files (default: built-in synthetic MA-52)")
    parser.add_argument("--modality", choices=MODALITIES)
    parser.add_argument("--seeds", type=_seeds,
                        help="number of seeds (3 → 1,2,3), a list (1,5,7), or MIN..MAX (3..10: seeds 1..3, then one "
                             "more per round for each variant not yet decided against the reference)")
    parser.add_argument("--epochs", type=_positive(int), help="epochs per trial (overrides the budget)")
    parser.add_argument("--samples", type=_positive(int), help="search samples per variant, for specs that tune")
    parser.add_argument("--address", help="join a running Ray cluster (e.g. auto); default: start Ray locally")
    parser.add_argument("--cpus-per-trial", type=_positive(float), help="CPUs per trial (default: the spec's, 1)")
    parser.add_argument("--gpus-per-trial", type=_fraction,
                        help=f"GPU share per trial, e.g. 0.25, asked for even where the cluster has no GPUs yet "
                             f"(default: the spec's, else {DEFAULT_GPUS_PER_TRIAL['paper']:g} under paper, only "
                             f"where the cluster has GPUs; none under quick)")
    parser.add_argument("--max-concurrent", type=_positive(int), help="at most this many trials at once")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE",
                        help="a .py file or module that registers your own model modules, for trials that name them "
                             "(docs/custom.md); repeatable; a spec can list them under imports:")
    parser.add_argument("--pack", type=_pack, default="auto",
                        help="train trials that differ only in seed, learning rate and such as one fused model: auto "
                             "(on GPUs up to 8 a pack; on CPUs not), off, or members per pack (default auto)")
    parser.add_argument("--storage", default="runs", help="experiments folder, NFS path or s3:// URI (default runs)")
    parser.add_argument("--name", help="experiment folder name (default: the spec's name)")
    parser.add_argument("--resume", action="store_true",
                        help="finish an interrupted experiment (any rerun under the same name does this: finished "
                             "trials are skipped, unfinished ones continue from their last checkpoint)")
    parser.add_argument("--force-spec", action="store_true",
                        help="run under --name even though its folder holds another spec's experiment (other factors, "
                             "rules, reference or metric), replacing its experiment.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the same as a key=value argument (kept for older command lines)")
    stale = parser.add_mutually_exclusive_group()
    stale.add_argument("--rerun-stale", dest="stale", action="store_const", const="rerun",
                       help="train again the finished trials of other code or data than now (the old results stay, "
                            "superseded)")
    stale.add_argument("--keep-stale", dest="stale", action="store_const", const="keep",
                       help="reuse the finished trials of other code or data than now (experiment.json counts them)")
    parser.add_argument("--log", action="append", default=[], choices=sorted(TRACKERS),
                        help="also log every trial to Weights & Biases or MLflow (repeatable; TensorBoard needs "
                             "nothing: tensorboard --logdir runs/NAME)")
    chatter = parser.add_mutually_exclusive_group()
    chatter.add_argument("-q", "--quiet", action="store_const", dest="level", const=logging.WARNING,
                         default=logging.INFO, help="say only warnings and failed trials")
    chatter.add_argument("-v", "--verbose", action="store_const", dest="level", const=logging.DEBUG,
                         help="also show Ray's progress tables and every trial's output")
    return parser


def _print_plan(spec: Spec, options: RunOptions) -> None:
    from .resources import trial_resources
    from .rounds import seeds_until_decided
    from .runner import plan_experiment, search_samples

    plans = plan_experiment(spec, options)
    # Ray is not started here, so say what a trial gets on a cluster with GPUs and on one without.
    with_gpus, without = (trial_resources(spec, options.budget, plans[0].config.train.device, has_gpus,
                                          options.cpus_per_trial, options.gpus_per_trial) for has_gpus in (True, False))
    print(f"{spec.name}: {spec.description}")
    print(f"budget {options.budget}; {len(plans)} trials; metric {spec.metric} ({spec.mode})")
    rule = seeds_until_decided(spec, options)
    if rule is not None:
        first_round = len({plan.variant_key for plan in plans}) * rule.min
        print(f"{rule}: {first_round} trials in the first round, then one seed more per round for each variant not "
              f"decided against the reference (and for the reference); the {len(plans)} trials below at most")
    if with_gpus == without:
        print(f"each trial gets {with_gpus}, whether or not the cluster has GPUs")
    else:
        print(f"each trial gets {with_gpus} where the cluster has GPUs; {without} where it has none")
    if spec.search:
        print(f"each variant is first tuned over search space {spec.search.space!r} "
              f"({search_samples(spec, options)} samples), then its best config runs on every seed")
    first = plans[0].config
    print(f"epochs {first.train.epochs}, batch {first.train.batch_size}, frames {first.model.num_frames}, "
          f"data {first.data.root or 'built-in synthetic MA-52'}")
    width = max(len(p.trial_key) for p in plans)
    for plan in plans:
        print(f"  {plan.trial_key:<{width}}  {plan.config_hash}")
    if rule is not None:  # the rounds pack the trials they run: round 1's are known, the later rounds' not yet
        by_variant: dict[str, list] = {}
        for plan in plans:
            by_variant.setdefault(plan.variant_key, []).append(plan)
        plans = [plan for variant in by_variant.values() for plan in variant[:rule.min]]
    _print_packs(spec, plans, options.pack, with_gpus.gpu > 0, without.gpu > 0, rule is not None)


def _print_packs(spec: Spec, plans: list, choice: str | int, gpu_with: bool, gpu_without: bool,
                 rounds: bool) -> None:
    """The trial packs (--pack) where the cluster has GPUs and where it has none, when they differ from single
    trials: of `plans`, round 1's trials where the seeds run in `rounds` (each later round packs the seeds it adds
    alike); the final trials of a tuned spec are packed alike once their configs are known, its tuning samples as
    they are asked."""
    from .packing import pack_size, plan_packs

    places = ([("where the cluster has GPUs", gpu_with), ("where it has none", gpu_without)]
              if pack_size(choice, gpu_with) != pack_size(choice, gpu_without) else [("", gpu_with)])
    for where, on_gpu in places:
        size = pack_size(choice, on_gpu)
        if spec.search and size > 1:
            asha = "; ASHA stops single members" if spec.search.scheduler else ""
            print(f"tuning samples{' ' * bool(where)}{where}: asked up to {size} at a time (TPE with the constant "
                  f"liar), each batch trained as packs of one shape{asha}")
        packs = plan_packs(plans, size)
        title = f"trial packs (--pack {choice}){' ' * bool(where)}{where}{' in round 1' if rounds else ''}"
        if len(packs) == len(plans):
            print(f"{title}: none, each trial alone")
            continue
        print(f"{title}: {len(packs)} Tune trials{'; each later round packs the seeds it adds alike' * rounds}")
        for pack in packs:
            print(f"  {pack.name}: {', '.join(m.trial_key for m in pack.members)}")


def _print_config(spec: Spec, options: RunOptions) -> None:
    """The resolved configuration as YAML: what every trial shares, then each variant's differences (the seeds
    aside), so that a grid of many variants still reads in one screen."""
    from .runner import plan_experiment, search_samples

    plans = plan_experiment(spec, options)
    flat = [{key: value for key, value in flatten(plan.config.to_dict()).items() if key != "train.seed"}
            for plan in plans]
    varied = [key for key in flat[0] if any(values[key] != flat[0][key] for values in flat)]
    shared = {section: {name: value for name, value in values.items() if f"{section}.{name}" in flat[0]
                        and f"{section}.{name}" not in varied}
              for section, values in plans[0].config.to_dict().items()}
    document: dict[str, Any] = {"experiment": spec.name, "budget": options.budget,
                                "seeds": sorted({plan.seed for plan in plans}), "shared": shared,
                                "variants": {plan.variant_key: {key: values[key] for key in varied}
                                             for plan, values in zip(plans, flat)}}
    if spec.search:
        document["search"] = {"space": spec.search.space, "samples": search_samples(spec, options),
                              "note": "each variant's searched keys are chosen by the search, then override these"}
    print(yaml.safe_dump(document, sort_keys=False), end="")


def _print_outcome(outcome: Outcome, spec: Spec) -> None:
    kept = f", {outcome.kept_stale} of them of other code or data (--keep-stale)" if outcome.kept_stale else ""
    print(f"\n{len(outcome.finished)} of {outcome.planned} trials finished "
          f"({outcome.skipped} from earlier runs{kept}); results in {outcome.experiment.uri}")
    rows: dict[str, list[float]] = {}
    for record in outcome.finished:
        rows.setdefault(record.get("variant_key", "?"), []).append(record["best"].get(spec.metric, float("nan")))
    for key, values in rows.items():
        mean = sum(values) / len(values)
        print(f"  {key:<40} {spec.metric} {mean:6.2f} over {len(values)} seed(s)")
    for record in outcome.failed:
        print(f"  FAILED {record.get('variant_key', '?')} seed {record.get('seed')}: {record.get('error')}")


def _experiment_and_assignments(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The experiment named first, then key=value overrides (positional ones, then --set's); a key=value in the
    experiment's place is an override given before any experiment."""
    experiment, assignments = args.experiment, [*args.assignments, *args.overrides]
    if experiment and "=" in experiment:
        raise ConfigError(f"name an experiment before the key=value overrides, e.g. python -m ablations.run "
                          f"msm_mtm {experiment} (--list shows the experiments)")
    return experiment, assignments


def _report(outcome: Outcome) -> None:
    if not outcome.experiment.is_local:
        print(f"build the report from a copy: python -m analysis.report {outcome.experiment.uri}")
        return
    try:
        from analysis.report import build_report
    except ImportError:
        return
    report = build_report([outcome.experiment.path])
    print(f"ablation table and plots: {report}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if args.list:
        for name, description in list_specs():
            print(f"{name:<12} {description}")
        return 0
    try:
        experiment, assignments = _experiment_and_assignments(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not experiment:
        parser.print_usage(sys.stderr)
        print("error: name an experiment (python -m ablations.run --list shows them)", file=sys.stderr)
        return 2
    from .interrupt import Interrupted
    from .runner import RunOptions, StaleResults, run_experiment
    from .storage import StorageError

    ranged = args.seeds if isinstance(args.seeds, SeedsUntilDecided) else None  # --seeds MIN..MAX
    try:
        imports = tuple(import_user_modules(args.imports))  # before the spec: its factors may name them
        spec = load_spec(experiment)
        options = RunOptions(
            budget=args.budget, dataset=args.dataset, data_root=args.data_root, modality=args.modality,
            seeds=args.seeds if ranged is None else list(ranged.seeds), until=ranged, epochs=args.epochs,
            samples=args.samples, address=args.address,
            cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
            max_concurrent=args.max_concurrent, storage=args.storage, name=args.name,
            overrides=parse_assignments(assignments), stale=args.stale,
            log=tuple(args.log), force_spec=args.force_spec, pack=args.pack, imports=imports)
        _check_overrides(spec, options)
        _warn_shadowed(spec, options.overrides)
        if args.print_config:
            _print_config(spec, options)
            return 0
        if args.dry_run:
            _print_plan(spec, options)
            return 0
        with console(args.level):
            outcome = run_experiment(spec, options)
    except Interrupted as stop:  # Ctrl-C or SIGTERM: the trials are stopped; say what was kept and how to go on
        print(stop.message, file=sys.stderr)
        return stop.exit_status
    except (SpecError, ConfigError, DataFormatError, FileNotFoundError, StorageError, StaleResults,
            RegistryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. the data cache on a full disk, an unreadable file
        reason = error.strerror or str(error) or type(error).__name__
        print(f"error: {f'{error.filename}: ' if error.filename else ''}{reason[:1].lower()}{reason[1:]}",
              file=sys.stderr)
        return 2
    except ValueError as error:  # e.g. an experiment folder of a newer format
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print_outcome(outcome, spec)
    if outcome.problem:  # nothing more can be written there: say so last, and why trials failed
        print(f"error: {outcome.problem}; finished trials are kept: free space or fix permissions, then rerun with "
              f"--resume", file=sys.stderr)
        return 1
    try:
        _report(outcome)
    except ValueError as error:  # analysis.report.ReportError: e.g. damaged records left nothing to report
        print(f"error: {error}; the trial results are kept: rebuild the report with python -m analysis.report "
              f"{outcome.experiment.uri}", file=sys.stderr)
        return 1
    except OSError as error:  # the results are safe; only the report could not be written
        from .storage import cannot_write

        print(f"error: {cannot_write(error.filename or outcome.experiment.uri + '/report', error)}; rebuild it "
              f"later with python -m analysis.report {outcome.experiment.uri}", file=sys.stderr)
        return 1
    return 0 if not outcome.failed else 1


if __name__ == "__main__":
    sys.exit(main())
