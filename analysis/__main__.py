"""`python -m analysis RUN ...` is the same as `python -m analysis.report RUN ...`."""
import sys

from .report import main

sys.exit(main())
