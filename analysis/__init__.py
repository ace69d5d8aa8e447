"""Experiment folders into tables and plots: collect -> stats -> tables / plots -> report.

Submodules are imported on demand (`from analysis.collect import collect`), so reading a table never pays for
matplotlib. Results are read from files only; Ray is never needed.
"""
