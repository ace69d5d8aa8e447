"""`python -m analysis RUN ...` is the same as `python -m analysis.report RUN ...`."""
import sys

from mmn.cli import answer_help_early

from .cli import report_parser

answer_help_early(report_parser)  # --help answers before pandas and matplotlib load

from .report import main  # noqa: E402

sys.exit(main())
