"""Experiments: config building, the LOSO runner, run folders, results and metrics, tracking."""
