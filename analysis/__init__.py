"""Experiment folders into tables and plots: collect -> groups (one setting) -> ensembles -> stats -> tables / plots
(or server files, where a split's labels are withheld: submission) -> report.

Submodules are imported on demand (`from analysis.collect import collect`), so reading a table never pays for
matplotlib. Results are read from files only; Ray is never needed.
"""
