"""Side-by-side benchmarks of medsight against the tutorials' Keras code.

Run them with ``python -m benchmarks.run --quick`` (or ``--full``); see ``run.py``.
"""
