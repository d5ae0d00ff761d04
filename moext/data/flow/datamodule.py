"""The flow DataModule: sample records -> aligned crops -> cached flow fields -> flow images.

:class:`FlowDataModule` is :class:`moext.data.pairs.datamodule.MERDataModule` (the same readers,
protocols, LOSO split, crop cache and ``moext prepare``) serving, instead of onset/apex pairs,
the onset -> apex optical flow of each clip (``inputs = "flow"``: SRMCL, STSTNet, OFF-ApexNet,
RCN-A, HTNet).

``prepare_data`` makes the aligned crops (the base class), then the flow of each crop pair
(:func:`moext.data.flow.cache.prepare_flow`: TV-L1 or Farneback, ``flow_method``; once per clip,
reused after) and, where regions are cut, the onset's landmarks in the crop
(:mod:`moext.data.flow.landmarks`). Loaders serve the raw fields, ``flow`` (B, 2, H, W) float16
``[u, v]`` in pixels of the full crop; on the device :meth:`FlowDataModule.flow_images` makes
what the network sees, in this order:

1. the augmentation when training (``augment: device``: mirror + rotation with the vectors
   turned, :func:`moext.data.pairs.augment.augment_flows`);
2. the channels, derived on the full crop (:func:`moext.data.flow.tvl1.flow_channels`: optical
   strain from the full-resolution field, as STSTNet's paper computes it);
3. the resize to ``flow_size`` (area averaging), when set (STSTNet, OFF-ApexNet, HTNet: 28);
4. the scaling to [0, 1] (:func:`moext.data.flow.tvl1.scale_flow`), per sample at the served
   size: the authors' 28 x 28 PNGs span exactly 0..255 in every channel, which a scaling done
   before the resize would not give;
5. the regions (``regions: htnet``: HTNet's four landmark areas, :mod:`moext.data.flow.regions`).

Steps 2-5 are settings of the DataModule, not of the flow cache (whose entries depend only on
the crops and the flow algorithm). Without augmentation, when the image is made small
(``flow_size``, ``regions``, a precomputed source), they run once per fold when its data is
loaded, and the loaders serve the images (:attr:`FlowDataModule.images_once`).

``flow_source: precomputed`` serves flow images made elsewhere instead (the MEGC2019 baselines'
28 x 28 PNGs, :mod:`moext.data.flow.precomputed`): samples from their list, with the sample
ids, subjects and folds of the computed path; no frames, crops or flow are computed; steps 4-5
apply (the regions at HTNet's fallback points: the files carry no landmarks).

Batches then hold ``flow`` (B, C, S, S) float in [0, 1], ``label`` (B,) long (-1 when
unlabelled) and ``index`` (B,) long; S is :attr:`FlowDataModule.input_size`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from moext.data.entries import PrepareReport
from moext.data.flow import precomputed as precomputed_flow
from moext.data.flow.cache import FlowAlgorithm, FlowReport, load_flow, prepare_flow
from moext.data.flow.farneback import FarnebackSettings
from moext.data.flow.landmarks import load_landmarks, prepare_landmarks
from moext.data.flow.precomputed import PrecomputedFlow
from moext.data.flow.regions import (
    check_regions,
    cut_regions,
    fallback_points,
    htnet_points,
    points_in_flow_image,
)
from moext.data.flow.tvl1 import (
    FlowScaling,
    TVL1Settings,
    check_channels,
    flow_channels,
    scale_flow,
)
from moext.data.pairs.augment import ExpandedPairs, augment_flows
from moext.data.pairs.datamodule import MERDataModule
from moext.data.protocols import THREE_CLASSES
from moext.data.records import DatasetError, Sample

FlowMethod = Literal["tvl1", "farneback"]
FlowSource = Literal["computed", "precomputed"]
Regions = Literal["none", "htnet", "htnet_code"]


def _settings(cls: type, value: Any) -> Any:
    """A settings dataclass from its config value.

    As it is, or built from the plain dict a config parsed without instantiation hands over
    (``moext prepare``, the LOSO runner).
    """
    return cls(**value) if isinstance(value, dict) else value


class FlowDataset(Dataset):
    """Flow fields (or precomputed flow images) from one tensor.

    Args:
        flows: (N, 2, H, W) float16 ``[u, v]``, or (N, C, S, S) uint8 precomputed images.
        labels: (N,) long.
        indices: (N,) long, positions in the DataModule's sample list.
        points: (N, 4, 2) float32 region points in the served image's pixels, or None.
    """

    def __init__(
        self, flows: Tensor, labels: Tensor, indices: Tensor, points: Tensor | None = None
    ) -> None:
        self.flows, self.labels, self.indices, self.points = flows, labels, indices, points

    def __len__(self) -> int:
        return len(self.flows)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = {"flow": self.flows[i], "label": self.labels[i], "index": self.indices[i]}
        if self.points is not None:
            item["points"] = self.points[i]
        return item


@dataclass
class FlowPrepareReport:
    """What ``FlowDataModule.prepare_data`` did: the crops, the flow fields, the landmarks.

    The landmarks, where regions are cut.
    """

    crops: PrepareReport
    flow: FlowReport
    landmarks: PrepareReport | None = None

    @property
    def failed(self) -> list:
        """Every failure of the crops, the flow fields and the landmarks."""
        extra = self.landmarks.failed if self.landmarks is not None else []
        return [*self.crops.failed, *self.flow.failed, *extra]

    def summary(self) -> str:
        """The crops', the flow fields' and the landmarks' summaries, one after the other."""
        lines = [self.crops.summary(), self.flow.summary()]
        if self.landmarks is not None:
            lines += self.landmarks.summary_lines("landmarks: found", "recomputed")
        return "\n".join(lines)


@dataclass
class PrecomputedReport:
    """What ``FlowDataModule.prepare_data`` found for a precomputed source.

    Every listed file there, readable and of the flow size (anything else is raised, each file
    named).
    """

    folder: Path
    samples: int
    failed: list = field(default_factory=list)

    def summary(self) -> str:
        """How many images were checked, and where."""
        return f"precomputed flow: {self.samples} images checked in {self.folder}"


class FlowDataModule(MERDataModule):
    """Onset -> apex flow images for pretraining or LOSO classification.

    ``inputs = "flow"``. Every argument of :class:`MERDataModule` applies (``task``,
    ``datasets``, ``protocol``, ``fold``, ``image_size``, ``landmarks``, ``batch_size``,
    ``max_rotation``, ``flip_p``, ...), except ``augment`` (``device`` or ``none`` here) and
    ``device_cache`` (not offered: flow batches are small). Defaults that differ: ``augment:
    none`` and ``expansion: 1`` (the SRMCL code shows no augmentation).

    Args:
        channels: the channels the network sees, in order, from ``u``, ``v``, ``magnitude``,
            ``strain`` (SRMCL: u, v, magnitude; STSTNet: u, v, strain; HTNet: strain, v, u).
        flow_scaling: ``max`` (per sample, zero motion stays 0.5), ``minmax`` (per sample and
            channel) or ``fixed`` (``flow_range`` pixels); see :func:`moext.data.flow.tvl1.scale_flow`.
        flow_range: pixels that map to the ends of [0, 1] with ``fixed``.
        flow_method: ``tvl1`` (scikit-image's TV-L1, settings ``tvl1``) or ``farneback``
            (OpenCV's, settings ``farneback``); part of every flow entry's key.
        tvl1: TV-L1 parameters (default: scikit-image's).
        farneback: Farneback parameters (default: HTNet's CAS(ME)^3 values).
        flow_size: the side the flow images are served at: flow and channels are computed on
            the full ``image_size`` crop, then resized (area) to ``flow_size``; ``None``: the
            crop's size. For a precomputed source: the side of its files.
        regions: ``none`` (the whole image), ``htnet`` (HTNet's four landmark areas, laid out
            2 x 2, at the same size) or ``htnet_code`` (the released code's transposed
            windows); see :mod:`moext.data.flow.regions`. Needs a face backend (``landmarks``).
        flow_source: ``computed`` (from the frames, as above) or ``precomputed`` (images made
            elsewhere: ``precomputed`` says where; protocol ``cde3``, no augmentation,
            ``flow_scaling: minmax``).
        precomputed: where precomputed images lie and what they hold
            (:class:`~moext.data.flow.precomputed.PrecomputedFlow`).
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
        flow_method: FlowMethod = "tvl1",
        tvl1: TVL1Settings | None = None,
        farneback: FarnebackSettings | None = None,
        flow_size: int | None = None,
        regions: Regions = "none",
        flow_source: FlowSource = "computed",
        precomputed: PrecomputedFlow | None = None,
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
        if flow_method not in ("tvl1", "farneback"):
            raise ValueError(f"flow_method must be 'tvl1' or 'farneback', got {flow_method!r}")
        self.flow_scaling = flow_scaling
        self.flow_range = flow_range
        self.flow_method = flow_method
        self.tvl1 = _settings(TVL1Settings, tvl1) or TVL1Settings()
        self.farneback = _settings(FarnebackSettings, farneback) or FarnebackSettings()
        self.flow_size = flow_size
        self.regions = regions
        self.flow_source = flow_source
        self.precomputed = _settings(PrecomputedFlow, precomputed)
        self._check_served_image()
        self._flow: Tensor | None = None
        self._points: Tensor | None = None
        self._listed: list[precomputed_flow.Listed] = []

    def _check_served_image(self) -> None:
        """Refuse settings that cannot make the served image (one line each)."""
        if self.flow_size is not None and self.flow_size < 1:
            raise ValueError(f"flow_size must be >= 1, got {self.flow_size}")
        if self.flow_source == "computed":
            if self.flow_size is not None and self.flow_size > self.image_size:
                raise ValueError(
                    f"flow_size={self.flow_size} is larger than the crop (image_size="
                    f"{self.image_size}): the flow is computed on the crop and resized down"
                )
        elif self.flow_source == "precomputed":
            checks = {
                "precomputed (where the images lie) is not set": self.precomputed is None,
                "a flow_size (the side of its images) is needed": self.flow_size is None,
                f"protocol must be cde3, not {self.protocol!r}": self.protocol != "cde3",
                f"augment must be none, not {self.augment!r}": self.augment != "none",
                "flow_scaling must be minmax (its images are min-max scaled already)": (
                    self.flow_scaling != "minmax"
                ),
            }
            problems = [what for what, failed in checks.items() if failed]
            if problems:
                raise ValueError(f"flow_source 'precomputed': {'; '.join(problems)}")
            stored = self.precomputed.channels
            missing = [c for c in self.channels if c not in stored]
            if missing:
                raise ValueError(
                    f"channels {list(self.channels)}: the precomputed images hold "
                    f"{list(stored)} (precomputed.channels), not {missing}"
                )
        else:
            raise ValueError(
                f"flow_source must be 'computed' or 'precomputed', got {self.flow_source!r}"
            )
        check_regions(self.regions, self.input_size)
        if self.regions != "none":
            if self.augment != "none":
                raise ValueError(
                    f"regions {self.regions!r} are cut at the landmarks of the crop as it is: "
                    "use augment: none"
                )
            if self.flow_source == "computed" and self.landmarks == "none":
                raise ValueError(
                    f"regions {self.regions!r} are cut at the face's landmarks, which "
                    "landmarks: none does not find: use landmarks: dlib (or fan)"
                )

    @property
    def num_channels(self) -> int:
        """How many channels a flow image has (the network's input channels)."""
        return len(self.channels)

    @property
    def input_size(self) -> int:
        """The side of the flow images served (the network's ``image_size``)."""
        return self.flow_size if self.flow_size is not None else self.image_size

    @property
    def input_size_setting(self) -> str:
        """The setting that decides :attr:`input_size`, as a config names it."""
        sized_by = "flow_size" if self.flow_size is not None else "image_size"
        return f"data.init_args.{sized_by}"

    @property
    def flow_algorithm(self) -> FlowAlgorithm:
        """The settings of the flow algorithm chosen by ``flow_method``."""
        return self.farneback if self.flow_method == "farneback" else self.tvl1

    # ------------------------------------------------------------------ samples
    def _resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.data_root() / p

    def _precomputed_list(self) -> list[precomputed_flow.Listed]:
        """Every sample of the precomputed set's list (all its databases)."""
        csv = self._resolve(self.precomputed.samples) if self.precomputed.samples else None
        return precomputed_flow.read_samples(csv)

    def _read_precomputed(self, listed: list[precomputed_flow.Listed]) -> Tensor:
        """The images of ``listed``, (N, 3, S, S) uint8; every file checked.

        The list's other databases' files are not extra.
        """
        folder = self._resolve(self.precomputed.folder)
        known = self._precomputed_list()
        return precomputed_flow.check_folder(
            listed, folder, self.precomputed, self.flow_size, known
        )

    def read_samples(self) -> tuple[list[Sample], list[int], tuple[str, ...]]:
        """All samples of this stage (before the fold split), their labels and the class names.

        For a precomputed source, those of its list (named as the readers name them).
        """
        if self.flow_source != "precomputed":
            return super().read_samples()
        if self.task != "classify":
            raise DatasetError("flow_source 'precomputed' serves classification only (task)")
        self.rejected, self.corrected = [], []
        self._listed = [x for x in self._precomputed_list() if x.sample.dataset in self.datasets]
        return [x.sample for x in self._listed], [x.label for x in self._listed], THREE_CLASSES

    # ------------------------------------------------------------------ flow
    def prepare_data(self) -> FlowPrepareReport | PrecomputedReport:
        """Align and cache the crops, their flow and landmarks (once); or check precomputed files.

        The landmarks where regions are cut; for a precomputed source, check its files.

        Raises:
            DatasetError: some clips could not be prepared (each named with its file and why),
                or precomputed files are missing, extra, unreadable or of another size.
        """
        if self.flow_source == "precomputed":
            samples, _, _ = self.read_samples()
            self._read_precomputed(self._listed)
            return PrecomputedReport(self._resolve(self.precomputed.folder), len(samples))
        crops = super().prepare_data()
        samples, _, _ = self.read_samples()
        root, settings = self.cache_root(), self.prepare_settings()
        flow = prepare_flow(
            samples, root, settings, self.flow_algorithm, workers=self.prepare_workers
        )
        flow.raise_failures("no flow for {n} clip(s)")
        landmarks = None
        if self.regions != "none":
            landmarks = prepare_landmarks(samples, root, settings, workers=self.prepare_workers)
            landmarks.raise_failures("no landmarks for {n} clip(s)")
        return FlowPrepareReport(crops, flow, landmarks)

    def inputs_loaded(self) -> bool:
        """Whether :meth:`load_inputs` has run (a second ``setup`` does nothing)."""
        return self._flow is not None

    @property
    def images_once(self) -> bool:
        """Whether the flow images are made once, when a fold's data is loaded.

        They are then served as they are: when nothing about them is random (``augment: none``)
        and they are made small (``flow_size``, ``regions`` or a precomputed source). Each
        sample's image depends on that sample alone, so they are the images a batch would make;
        the per-batch work (at 224 x 224, most of a CPU second per batch of 256) is done once.
        """
        made_small = self.flow_size is not None or self.regions != "none"
        return self.augment == "none" and (made_small or self.flow_source == "precomputed")

    def load_inputs(self) -> None:
        """Load the flow of ``self.samples``, and the region points, if any.

        The cached fields, (N, 2, H, W) float16, or the precomputed images' channels,
        (N, C, S, S) uint8; with :attr:`images_once`, the flow images themselves, (N, C, S, S)
        float32 in [0, 1].
        """
        n, size = len(self.samples), self.input_size
        if self.flow_source == "precomputed":
            images = self._read_precomputed(self._listed)
            stored = self.precomputed.channels
            self._flow = images[:, [stored.index(c) for c in self.channels]].contiguous()
            self._points = fallback_points(n, size) if self.regions != "none" else None
        else:
            root, settings = self.cache_root(), self.prepare_settings()
            self._flow = load_flow(self.samples, root, settings, self.flow_algorithm)
            if self.regions != "none":
                landmarks = load_landmarks(self.samples, root, settings)
                points = htnet_points(landmarks)
                self._points = points_in_flow_image(points, self.image_size, size)
        if self.images_once:
            self._flow = self._all_images(self._flow, self._points)

    def _all_images(self, flow: Tensor, points: Tensor | None, chunk: int = 256) -> Tensor:
        """:meth:`flow_images` of every sample, ``chunk`` at a time: (N, C, S, S) float32."""
        out = torch.empty((len(flow), self.num_channels, self.input_size, self.input_size))
        for i in range(0, len(flow), chunk):
            part = points[i : i + chunk] if points is not None else None
            out[i : i + chunk] = self.flow_images(flow[i : i + chunk], points=part)
        return out

    def _subset(self, index: Tensor, transform: Any = None) -> FlowDataset:
        labels = torch.tensor(self.labels, dtype=torch.long)
        served = self._points is not None and not self.images_once  # the images hold them
        points = self._points[index] if served else None
        return FlowDataset(self._flow[index], labels[index], index, points)

    # ------------------------------------------------------------ dataloaders
    def training_pairs(self, device: torch.device | str = "cpu"):
        """Refused (``NotImplementedError``): a flow DataModule serves flow fields, not pairs."""
        raise NotImplementedError("FlowDataModule serves flow fields, not pairs")

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-balanced) batches of the training flow, ``expansion`` times each."""
        ds = ExpandedPairs(self._subset(self.train_index), self.expansion)
        # no batch of one (BatchNorm, batch statistics)
        return self.shuffled_loader(ds, drop_last=len(ds) > self.batch_size)

    def flow_images(
        self, flow: Tensor, training: bool = False, points: Tensor | None = None
    ) -> Tensor:
        """What the loaders serve -> what the network sees (the module docstring's steps).

        Args:
            flow: (B, 2, H, W) ``[u, v]`` in pixels (any float dtype), or, for a precomputed
                source, (B, C, S, S) uint8 images.
            training: apply the augmentation (``augment: device``).
            points: (B, 4, 2) region points in the served image's pixels (``regions``).

        Returns:
            (B, C, S, S) float32 in [0, 1], C = ``len(channels)``, S = :attr:`input_size`.
        """
        if self.flow_source == "precomputed":
            x = flow.float() / 255
        else:
            uv = flow.float()
            if training and self.augment == "device":
                uv = augment_flows(uv, self.max_rotation, self.flip_p)
            x = flow_channels(uv, self.channels)
            if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        x = scale_flow(x, self.channels, self.flow_scaling, self.flow_range)
        if self.regions != "none":
            if points is None:
                raise ValueError(f"regions {self.regions!r} need the batch's points")
            x = cut_regions(x, points, self.regions)
        return x

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """The served flow -> the flow image (B, C, S, S) in [0, 1]; augmented when training.

        With :attr:`images_once`, the loaders serve the images: nothing to do.
        """
        if self.images_once:
            return batch
        training = self.trainer is not None and self.trainer.training
        batch = dict(batch)
        points = batch.pop("points", None)
        return {**batch, "flow": self.flow_images(batch["flow"], training, points)}
