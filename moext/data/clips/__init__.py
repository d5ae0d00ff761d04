"""Whole-clip inputs: the clip cache and the clip DataModule.

The clip cache holds every frame onset -> offset with the pair's crop; the clip DataModule
serves padded batches with a mask.

Stands on :mod:`moext.data.pairs` (a clip reuses its pair entry's crop transform).
"""
