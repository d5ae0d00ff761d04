"""The data layer: database readers -> sample records -> aligned crop cache -> pair batches.

``MERDataModule`` is imported lazily, so the readers and ``moext data summary`` do not pay for
importing Lightning.
"""

from moext.data.records import DatasetError, Sample

__all__ = ["DatasetError", "MERDataModule", "Sample"]


def __getattr__(name: str):
    if name == "MERDataModule":
        from moext.data.datamodule import MERDataModule

        return MERDataModule
    raise AttributeError(f"module 'moext.data' has no attribute {name!r}")
