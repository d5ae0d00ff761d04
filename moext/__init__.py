"""MoExt: micro-expression recognition by motion feature extraction based on pre-training."""

__version__ = "0.1.0"
