"""Optical flow inputs: TV-L1 and derived channels, the flow cache and the flow DataModule.

Stands on :mod:`moext.data.pairs` (flow is computed on the cached crops of each pair).
"""
