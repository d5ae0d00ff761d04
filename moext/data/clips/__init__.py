"""Whole-clip inputs: the clip cache (every frame onset -> offset, the pair's crop) and the
clip DataModule (padded batches with a mask).

Stands on :mod:`moext.data.pairs` (a clip reuses its pair entry's crop transform).
"""
