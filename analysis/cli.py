"""The command line of `python -m analysis.report` and the choices it offers, in a module without pandas, scipy or
matplotlib, so that `--help` answers at once. The modules that act on a choice import its list from here."""
from __future__ import annotations

import argparse
from importlib import metadata

from .columns import DEFAULT_METRICS, METRICS, PHASES

IMAGE_FORMATS = ("png", "pdf")  # what analysis.plots writes
FORMATS = ("latex", "md", *IMAGE_FORMATS)
FUSIONS = ("probabilities", "logits")  # how analysis.ensembles fuses streams
# How a table fits the page (analysis.tables): auto (column when its compact form fits a two-column paper's column,
# else span); span (table*: both columns of a two-column paper, the text width of a one-column one); column (table:
# one column); none (table at natural size, as written before there were options). All but none set the body in
# \footnotesize with narrower column gaps, and shrink it to the width when still wider.
LATEX_FITS = ("auto", "span", "column", "none")
# How a variant is compared with the reference (analysis.stats.compare): the paired t-test (default), Wilcoxon's
# signed-rank test, or a percentile bootstrap interval of the mean difference.
TESTS = ("t", "wilcoxon", "bootstrap")
# Equivalence margin, in the metric's points: a difference within ± this counts as none (the report's --margin and a
# spec's `seeds: {..., margin: }`, whose rounds decide by the same rule).
DEFAULT_MARGIN = 0.5
MIN_PAIRED_SEEDS = 3  # a comparison with fewer seeds shared with the reference gets no test and no decision

EXAMPLES = """examples:
  python -m analysis.report runs/msm_mtm
  python -m analysis.report runs/msm_mtm runs/depth --metrics val_top1,params --format md,png
  python -m analysis.report runs/msm_mtm --split test --out reports/test
  python -m analysis.report runs/msm_mtm --test wilcoxon --margin 1
  python -m analysis.report runs/msm_mtm_quick runs/msm_mtm_paper      # also: do the budgets rank alike?
  mmn-ablate report s3://bucket/runs/msm_mtm
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Tables and plots of finished experiments.")
    parser.add_argument("--version", action="version", version=f"mmn-ablate {metadata.version('mmn-ablate')}")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="experiment folder, file:// or s3:// URI")
    parser.add_argument("--metrics", help=f"comma-separated, from: {', '.join(METRICS)} "
                                          f"(default: {', '.join(DEFAULT_METRICS)}, those recorded)")
    parser.add_argument("--format", help=f"comma-separated, from: {', '.join(FORMATS)} (default: all)")
    parser.add_argument("--out", help="report folder (default: <first RUN>/report, or <first RUN>/report/SPLIT)")
    parser.add_argument("--phase", default="best", choices=PHASES,
                        help="metric values at the best epoch (default) or the final one")
    parser.add_argument("--split", default="val",
                        help="val (default: the metrics training recorded) or a split python -m ablations.evaluate "
                             "evaluated, e.g. test")
    parser.add_argument("--group", type=int, default=1, metavar="N",
                        help="which setting of a folder holding trials of several settings: 1 is the newest")
    parser.add_argument("--fusion", default="probabilities", choices=FUSIONS,
                        help="how ensembles fuse their streams: weighted sum of softmax probabilities (default) or "
                             "of raw logits")
    parser.add_argument("--test", default="t", choices=TESTS,
                        help="how each variant is compared with the reference over the seeds both finished: paired "
                             "t-test (default), Wilcoxon signed-rank, or bootstrap interval; Holm-corrected")
    parser.add_argument("--margin", type=_positive_float, metavar="POINTS",
                        help=f"equivalence margin: a difference within ± this is decided equivalent (default: the "
                             f"margin the experiment's seeds until decided used, else {DEFAULT_MARGIN:g})")
    parser.add_argument("--no-delta", dest="delta", action="store_false", default=None,
                        help="leave out the Δ columns (paired difference to the reference) of the tables")
    parser.add_argument("--latex-fit", default="auto", choices=LATEX_FITS,
                        help="how table.tex fits the page: auto (default: one column when narrow enough, else "
                             "span), span (table*, both columns), column (table, one column), none (natural size)")
    return parser
