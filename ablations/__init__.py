"""Experiment specs and their execution on Ray Tune: `python -m ablations.run NAME`."""
