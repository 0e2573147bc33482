"""Side-by-side benchmarks of medsight against the tutorials' Keras code (``python -m benchmarks.run``)."""
