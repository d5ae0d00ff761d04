"""Onset/apex pairs: the aligned crop cache, the pair DataModule and the augmentations.

Flow (:mod:`moext.data.flow`) and clips (:mod:`moext.data.clips`) stand on this package: their
entries are derived from the pair entries and their DataModules extend :class:`MERDataModule`.
"""
