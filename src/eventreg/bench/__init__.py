"""The benchmark: `python -m eventreg.bench` (see __main__.py)."""
