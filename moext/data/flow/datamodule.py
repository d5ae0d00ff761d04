"""The flow-field DataModule: sample records -> aligned crops -> cached TV-L1 flow -> flow images.

:class:`FlowDataModule` is :class:`moext.data.pairs.datamodule.MERDataModule` (the same readers,
protocols, LOSO split, crop cache and ``moext prepare``) serving, instead of onset/apex pairs,
the onset -> apex optical flow of each clip (``inputs = "flow"``; SRMCL's input).

``prepare_data`` makes the aligned crops (the base class), then the TV-L1 flow of each crop pair
(:func:`moext.data.flow.cache.prepare_flow`, with a progress bar; once per clip, reused after).
Loaders serve the raw fields, ``flow`` (B, 2, H, W) float16 ``[u, v]`` in pixels; on the device
:meth:`FlowDataModule.on_after_batch_transfer` augments them when training (``augment:
device``: mirror + rotation with the vectors turned, :func:`moext.data.pairs.augment.augment_flows`),
derives the channels (:func:`moext.data.flow.tvl1.flow_channels`) and scales them to [0, 1]
(:func:`moext.data.flow.tvl1.scale_flow`). Batches then hold ``flow`` (B, C, H, W) float in [0, 1],
``label`` (B,) long (-1 when unlabelled) and ``index`` (B,) long.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from moext.data.entries import PrepareReport
from moext.data.flow.cache import FlowReport, load_flow, prepare_flow
from moext.data.flow.tvl1 import (
    FlowScaling,
    TVL1Settings,
    check_channels,
    flow_channels,
    scale_flow,
)
from moext.data.pairs.augment import ExpandedPairs, augment_flows
from moext.data.pairs.datamodule import MERDataModule


class FlowDataset(Dataset):
    """Flow fields from one tensor.

    Args:
        flows: (N, 2, H, W) float16 ``[u, v]``.
        labels: (N,) long.
        indices: (N,) long, positions in the DataModule's sample list.
    """

    def __init__(self, flows: Tensor, labels: Tensor, indices: Tensor) -> None:
        self.flows, self.labels, self.indices = flows, labels, indices

    def __len__(self) -> int:
        return len(self.flows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"flow": self.flows[i], "label": self.labels[i], "index": self.indices[i]}


@dataclass
class FlowPrepareReport:
    """What ``FlowDataModule.prepare_data`` did: the crops, then the flow fields."""

    crops: PrepareReport
    flow: FlowReport

    @property
    def failed(self) -> list:
        return [*self.crops.failed, *self.flow.failed]

    def summary(self) -> str:
        return f"{self.crops.summary()}\n{self.flow.summary()}"


class FlowDataModule(MERDataModule):
    """Onset -> apex TV-L1 flow images for pretraining or LOSO classification.

    ``inputs = "flow"``. Every argument of :class:`MERDataModule` applies (``task``,
    ``datasets``, ``protocol``, ``fold``, ``image_size``, ``landmarks``, ``batch_size``,
    ``max_rotation``, ``flip_p``, ...), except ``augment`` (``device`` or ``none`` here) and
    ``device_cache`` (not offered: flow batches are small). Defaults that differ: ``augment:
    none`` and ``expansion: 1`` (the SRMCL code shows no augmentation).

    Args:
        channels: the channels the network sees, from ``u``, ``v``, ``magnitude``, ``strain``
            (SRMCL: u, v, magnitude).
        flow_scaling: ``max`` (per sample, zero motion stays 0.5), ``minmax`` (per sample and
            channel) or ``fixed`` (``flow_range`` pixels); see :func:`moext.data.flow.tvl1.scale_flow`.
        flow_range: pixels that map to the ends of [0, 1] with ``fixed``.
        tvl1: TV-L1 parameters (default: scikit-image's); part of every flow entry's key.
        augment: ``device`` (mirror with probability ``flip_p`` and rotation in
            [-max_rotation, max_rotation], vectors turned with the image) or ``none``.
        expansion: times each training sample appears per epoch.
        **kwargs: the arguments of :class:`MERDataModule`.
    """

    #: What the batches hold (the task's ``inputs`` must match): flow images.
    inputs = "flow"

    def __init__(
        self,
        channels: list[str] | None = None,
        flow_scaling: FlowScaling = "max",
        flow_range: float = 4.0,
        tvl1: TVL1Settings | None = None,
        augment: Literal["device", "none"] = "none",
        expansion: int = 1,
        **kwargs: Any,
    ) -> None:
        if augment not in ("device", "none"):
            raise ValueError(f"FlowDataModule: augment must be 'device' or 'none', got {augment!r}")
        if kwargs.get("device_cache"):
            raise ValueError("FlowDataModule: device_cache is not offered for flow inputs")
        super().__init__(augment=augment, expansion=expansion, **kwargs)
        self.channels = check_channels(channels or ("u", "v", "magnitude"))
        if flow_scaling not in ("max", "minmax", "fixed"):
            raise ValueError(
                f"flow_scaling must be 'max', 'minmax' or 'fixed', got {flow_scaling!r}"
            )
        if flow_scaling == "fixed" and "strain" in self.channels:
            raise ValueError("flow_scaling 'fixed' has no range for strain: use 'max' or 'minmax'")
        if flow_range <= 0:
            raise ValueError(f"flow_range must be > 0, got {flow_range}")
        self.flow_scaling = flow_scaling
        self.flow_range = flow_range
        self.tvl1 = tvl1 or TVL1Settings()
        self._flow: Tensor | None = None

    @property
    def num_channels(self) -> int:
        """How many channels a flow image has (the network's input channels)."""
        return len(self.channels)

    # ------------------------------------------------------------------ flow
    def prepare_data(self) -> FlowPrepareReport:
        """Align and cache the crops, then compute and cache their TV-L1 flow (once).

        Raises:
            DatasetError: some clips could not be prepared (each named with its file and why).
        """
        crops = super().prepare_data()
        samples, _, _ = self.read_samples()
        flow = prepare_flow(
            samples,
            self.cache_root(),
            self.prepare_settings(),
            self.tvl1,
            workers=self.prepare_workers,
        )
        flow.raise_failures("no flow for {n} clip(s)")
        return FlowPrepareReport(crops, flow)

    def inputs_loaded(self) -> bool:
        return self._flow is not None

    def load_inputs(self) -> None:
        """Load the cached flow fields of ``self.samples``: (N, 2, H, W) float16."""
        self._flow = load_flow(self.samples, self.cache_root(), self.prepare_settings(), self.tvl1)

    def _subset(self, index: Tensor, transform: Any = None) -> FlowDataset:
        labels = torch.tensor(self.labels, dtype=torch.long)
        return FlowDataset(self._flow[index], labels[index], index)

    # ------------------------------------------------------------ dataloaders
    def training_pairs(self, device: torch.device | str = "cpu"):
        raise NotImplementedError("FlowDataModule serves flow fields, not pairs")

    def train_dataloader(self) -> DataLoader:
        ds = ExpandedPairs(self._subset(self.train_index), self.expansion)
        # no batch of one (BatchNorm, batch statistics)
        return self.shuffled_loader(ds, drop_last=len(ds) > self.batch_size)

    def flow_images(self, uv: Tensor, training: bool = False) -> Tensor:
        """Raw fields -> what the network sees.

        Args:
            uv: (B, 2, H, W) ``[u, v]`` in pixels (any float dtype).
            training: apply the augmentation (``augment: device``).

        Returns:
            (B, C, H, W) float32 in [0, 1], C = ``len(channels)``.
        """
        uv = uv.float()
        if training and self.augment == "device":
            uv = augment_flows(uv, self.max_rotation, self.flip_p)
        return scale_flow(
            flow_channels(uv, self.channels), self.channels, self.flow_scaling, self.flow_range
        )

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """float16 [u, v] -> the flow image (B, C, H, W) in [0, 1]; augmented when training."""
        training = self.trainer is not None and self.trainer.training
        return {**batch, "flow": self.flow_images(batch["flow"], training)}
