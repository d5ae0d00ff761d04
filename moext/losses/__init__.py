"""Losses as pure functions with tensor shapes in their docstrings, one file per method."""
