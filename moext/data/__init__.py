"""The data layer: database readers -> sample records -> aligned crop cache -> pair batches.

``MERDataModule`` (pairs), ``FlowDataModule`` (flow fields) and ``ClipDataModule`` (clips) are imported lazily, so the
readers and ``moext data summary`` do not pay for importing Lightning.
"""

from moext.data.records import DatasetError, Sample

__all__ = ["ClipDataModule", "DatasetError", "FlowDataModule", "MERDataModule", "Sample"]


def __getattr__(name: str):
    if name == "MERDataModule":
        # lazy: Lightning is imported only when a DataModule is asked for
        from moext.data.pairs.datamodule import MERDataModule

        return MERDataModule
    if name == "FlowDataModule":
        # lazy: Lightning is imported only when a DataModule is asked for
        from moext.data.flow.datamodule import FlowDataModule

        return FlowDataModule
    if name == "ClipDataModule":
        # lazy: Lightning is imported only when a DataModule is asked for
        from moext.data.clips.datamodule import ClipDataModule

        return ClipDataModule
    raise AttributeError(f"module 'moext.data' has no attribute {name!r}")
