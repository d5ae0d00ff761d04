"""Runnable benchmarks of the moext input path, training steps and LOSO wall clock.

Run them from the repository root as modules, e.g. ``python -m benchmarks.input_path``;
see ``benchmarks/README.md``.
"""
