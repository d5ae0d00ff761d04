"""Whole clips for methods that read every frame from onset to offset (AKMNet).

:class:`ClipDataModule` is :class:`~moext.data.pairs.datamodule.MERDataModule` with ``inputs =
"clips"``: the same readers, protocols, LOSO split and pair cache, but its batches hold every
frame of each clip (:mod:`moext.data.clips.cache`: one crop per clip, the pair cache's, onset and
apex not decoded again).

Clips have any length: a batch pads them to its longest clip and says which frames are real:

* ``frames`` (B, T_max, 3, H, W): uint8 in the loader, float in [0, 1] once on the device;
  padding frames are zeros;
* ``mask`` (B, T_max) bool, True for a real frame (the first ``length`` of each row);
* ``length`` (B,) long, ``label`` (B,) long, ``index`` (B,) long (position in ``samples``).

Padding, not length buckets: a network must use ``mask`` / ``length`` (AKMNet runs its backbone
on the real frames only, masks its frame scores and packs its GRU sequences), so a clip's
prediction does not depend on what it is batched with.

Memory: a clip never has more than ``max_frames`` frames (longer clips are uniformly
subsampled when their entry is built, keeping onset, apex and offset, and listed by ``moext
prepare``); a batch therefore holds at most ``batch_size * max_frames`` frames. Entries are
read per item (each checked against its checksum), so the database is never loaded whole.

Motion magnification (``magnify``, every stage, before the augmentation; off by default; see
docs/magnification.md):

* a number (``magnify: 15``) or ``{method: linear, alpha: 15}``: linear magnification on the
  device, each frame becomes ``I_t + alpha (I_t - I_onset)``, clipped to [0, 1]
  (:func:`magnify_clips`); ``0`` is off. Configs written before phase magnification existed say
  a number, and mean exactly this;
* ``{method: phase, alpha: 15, low: ..., high: ..., levels: ..., sigma: ..., temporal: ...,
  attenuate: ...}`` (:class:`~moext.data.magnify.MagnifySettings`): phase-based magnification
  (AKMNet's paper: alpha 15, P Sec. IV.A), computed once per clip by ``moext prepare`` at the
  database's frame rate and cached (:mod:`moext.data.clips.magnified`); batches read the
  magnified entries. Settings that cannot work for a database of ``datasets`` (alpha <= 0, a band
  outside (0, fps / 2), more levels than ``image_size`` allows, a database without a known frame
  rate) are refused in one line by :meth:`ClipDataModule.check_magnify`, which the experiment's
  preflight, ``prepare_data`` and ``setup`` call before anything else.

Training augmentation (on the device, one draw per clip shared by all its frames):
``augment: crop`` (AKMNet's code: with probability ``crop_p`` enlarge by ``crop_zoom`` and cut one
random window of the original size), ``device`` (the package's mirror + rotation) or ``none``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from moext.data.clips.cache import ClipCache, ClipIndex, ClipReport, index_clips, prepare_clips
from moext.data.clips.magnified import MagnifiedClipCache, index_magnified, prepare_magnified
from moext.data.entries import EntryCache, read_entry
from moext.data.magnify import MagnifySettings
from moext.data.pairs.augment import ExpandedPairs, augment_clips, zoom_crop_clips
from moext.data.pairs.datamodule import MERDataModule
from moext.data.readers import frame_rates

log = logging.getLogger(__name__)


def magnify_clips(frames: Tensor, mask: Tensor, alpha: float) -> Tensor:
    """Linear magnification of each frame's change from its clip's first frame (the onset).

    Args:
        frames: (B, T, C, H, W) float in [0, 1], padded.
        mask: (B, T) bool, True on real frames.
        alpha: magnification factor (0: unchanged).

    Returns:
        (B, T, C, H, W): ``clip(I_t + alpha (I_t - I_0), 0, 1)`` on real frames, zeros on padding.
    """
    if alpha == 0:
        return frames
    out = (frames + alpha * (frames - frames[:, :1])).clamp_(0, 1)
    return out * mask[:, :, None, None, None].to(out.dtype)


def magnify_settings(magnify: float | MagnifySettings | dict[str, Any]) -> MagnifySettings | None:
    """The clip DataModule's ``magnify`` setting as :class:`~moext.data.magnify.MagnifySettings`.

    Args:
        magnify: a number (the linear alpha, 0: off), settings, or a mapping of their fields.

    Returns:
        The settings, or None when off (``0``).

    Raises:
        ValueError: a negative number, or a mapping with a field the settings do not have.
    """
    if isinstance(magnify, MagnifySettings):
        return magnify
    if isinstance(magnify, dict):
        known = set(MagnifySettings.__dataclass_fields__)
        unknown = sorted(set(magnify) - known)
        if unknown:
            raise ValueError(f"magnify: unknown setting(s) {unknown}; known: {sorted(known)}")
        return MagnifySettings(**magnify)
    if magnify < 0:
        raise ValueError(
            f"magnify must be >= 0 (a number is the linear alpha; 0: off), got {magnify}"
        )
    return MagnifySettings("linear", float(magnify)) if magnify > 0 else None


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Pad clips of different lengths into one batch (see the module docstring for the keys)."""
    lengths = torch.tensor([len(item["frames"]) for item in items], dtype=torch.long)
    first = items[0]["frames"]
    frames = first.new_zeros((len(items), int(lengths.max()), *first.shape[1:]))
    for i, item in enumerate(items):
        frames[i, : len(item["frames"])] = item["frames"]
    mask = torch.arange(frames.shape[1])[None, :] < lengths[:, None]
    return {
        "frames": frames,
        "mask": mask,
        "length": lengths,
        "label": torch.stack([torch.as_tensor(item["label"]) for item in items]),
        "index": torch.stack([torch.as_tensor(item["index"]) for item in items]),
    }


class ClipDataset(Dataset):
    """Clips read from their cache entries, one per item.

    Args:
        cache: the cache of the entries (clip or magnified clip), for error messages.
        clips: where the entries of the DataModule's samples are.
        positions: (N,) long, which samples (positions in the sample list) this dataset serves.
        labels: (N_samples,) long, every sample's label.
        sample_ids: every sample's id, for error messages.

    Attributes:
        labels: (N,) long, the label of each item (what a balanced sampler draws from).

    Items: ``frames`` (T, 3, H, W) uint8, ``label``, ``index`` (the sample's position).
    """

    def __init__(
        self,
        cache: EntryCache,
        clips: ClipIndex,
        positions: Tensor,
        labels: Tensor,
        sample_ids: list[str],
    ) -> None:
        self.cache, self.clips = cache, clips
        self.positions, self.labels, self.sample_ids = positions, labels[positions], sample_ids

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        k = int(self.positions[i])
        what = f"{self.sample_ids[k]}: {self.cache.what}"
        array = read_entry(self.clips.entries[k], what)  # its bytes checked by its checksum
        frames = torch.from_numpy(array).permute(0, 3, 1, 2)
        return {"frames": frames, "label": self.labels[i], "index": torch.tensor(k)}


def balanced_positions(positions: Tensor, labels: Tensor, seed: int = 0) -> Tensor:
    """Oversample every class of ``positions`` up to the largest class's count.

    Each clip of a class of n clips appears ``M // n`` times, and ``M % n`` of them (drawn
    without replacement, seeded) once more, M = the largest count (AKMNet's class
    equalisation, paper Sec. IV.A: "resampling them according to the class comprising largest
    number of clips").

    Args:
        positions: (N,) long sample positions.
        labels: (N_samples,) long labels of all samples.
        seed: seeds the draw of the extra clips.

    Returns:
        (K * M,) long positions, K = classes present; classes in order, clips in order.
    """
    g = torch.Generator().manual_seed(seed)
    by_class = [positions[labels[positions] == c] for c in labels[positions].unique().tolist()]
    largest = max(len(p) for p in by_class)
    out = []
    for members in by_class:
        extra = members[torch.randperm(len(members), generator=g)[: largest % len(members)]]
        out.append(torch.cat([members.repeat(largest // len(members)), extra.sort().values]))
    return torch.cat(out)


class ClipDataModule(MERDataModule):
    """Micro-expression clips (every frame, onset to offset) for LOSO classification.

    ``inputs = "clips"``. Everything about reading, labelling, the LOSO split and the crops is
    :class:`~moext.data.pairs.datamodule.MERDataModule`'s (see it for the shared arguments); the
    clip entries are built from its pair entries by ``prepare_data`` (``moext prepare``).

    Args:
        datasets: and ``protocol``, ``fold``, ``root``, ``paths``, ``reader_options``,
            ``image_size``, ``landmarks``, ``landmark_weights``, ``on_no_face``, ``cache_dir``,
            ``cache_key``, ``num_workers``, ``seed``, ``prepare_workers``, ``aus``,
            ``holdout``: as for
            :class:`~moext.data.pairs.datamodule.MERDataModule` (``task`` is ``classify``).
        batch_size: clips per batch (AKMNet's code: 1, with gradients accumulated over 8).
        eval_batch_size: clips per test / predict batch (default ``batch_size``).
        expansion: times each training clip appears per epoch.
        max_frames: the most frames a clip has; longer clips are uniformly subsampled to it,
            keeping onset, apex and offset (listed by ``moext prepare`` and in the log).
        augment: ``"crop"`` (AKMNet's code), ``"device"`` (mirror + rotation) or ``"none"``.
        crop_zoom: enlargement of ``augment: crop`` (code: 144 / 128).
        crop_p: probability of ``augment: crop`` zooming a clip (code: 0.5).
        max_rotation: ``augment: device``'s rotation range (degrees).
        flip_p: ``augment: device``'s mirror probability.
        balance: oversample each class of the training fold to the largest class's count
            (:func:`balanced_positions`; AKMNet's paper does; not with ``sampler: balanced``).
        magnify: a number, the alpha of :func:`magnify_clips` (linear, on the device; 0: off),
            or :class:`~moext.data.magnify.MagnifySettings` (``{method: phase | linear, alpha,
            ...}``; phase is cached by ``moext prepare``); see the module docstring.
        sampler: training batches, as for :class:`~moext.data.pairs.datamodule.MERDataModule`.
        balanced_classes: as for ``MERDataModule`` (``sampler: balanced``).
        balanced_samples: as for ``MERDataModule`` (``sampler: balanced``).
    """

    #: What the batches hold (the task's ``inputs`` must match): whole clips.
    inputs = "clips"

    def __init__(
        self,
        datasets: list[str] | None = None,
        protocol: str | None = None,
        fold: str | None = None,
        root: str | None = None,
        paths: dict[str, str] | None = None,
        reader_options: dict[str, dict[str, Any]] | None = None,
        image_size: int = 128,
        landmarks: str = "dlib",
        landmark_weights: str | None = None,
        on_no_face: str = "error",
        cache_dir: str | None = None,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        expansion: int = 1,
        max_frames: int = 128,
        augment: Literal["crop", "device", "none"] = "crop",
        crop_zoom: float = 144 / 128,
        crop_p: float = 0.5,
        max_rotation: float = 10.0,
        flip_p: float = 0.5,
        balance: bool = False,
        magnify: float | MagnifySettings = 0.0,
        cache_key: Literal["stat", "content"] = "stat",
        num_workers: int = 0,
        seed: int = 0,
        prepare_workers: int = 0,
        sampler: Literal["shuffle", "balanced"] = "shuffle",
        balanced_classes: int | None = None,
        balanced_samples: int | None = None,
        aus: list[int] | None = None,
        holdout: Literal["subject", "database"] = "subject",
    ) -> None:
        if augment not in ("crop", "device", "none"):
            raise ValueError(f"augment must be 'crop', 'device' or 'none', got {augment!r}")
        if max_frames < 3:
            raise ValueError(f"max_frames must be >= 3 (onset, apex, offset), got {max_frames}")
        if balance and sampler == "balanced":
            raise ValueError(
                "balance and sampler: balanced both balance the classes (by oversampling, by "
                "drawing balanced batches): choose one"
            )
        settings = magnify_settings(magnify)
        super().__init__(
            task="classify",
            datasets=datasets,
            protocol=protocol,
            root=root,
            paths=paths,
            reader_options=reader_options,
            fold=fold,
            macro=False,
            image_size=image_size,
            landmarks=landmarks,
            landmark_weights=landmark_weights,
            on_no_face=on_no_face,
            cache_dir=cache_dir,
            cache_key=cache_key,
            batch_size=batch_size,
            expansion=expansion,
            augment="device" if augment == "device" else "none",
            max_rotation=max_rotation,
            flip_p=flip_p,
            num_workers=num_workers,
            seed=seed,
            prepare_workers=prepare_workers,
            sampler=sampler,
            balanced_classes=balanced_classes,
            balanced_samples=balanced_samples,
            aus=aus,
            holdout=holdout,
        )
        self.augment = augment  # the base class only knows its own modes
        self.max_frames = max_frames
        self.eval_batch_size = eval_batch_size or batch_size
        self.crop_zoom, self.crop_p = crop_zoom, crop_p
        self.balance = balance
        self.magnify = magnify  # as given
        self.magnify_settings = settings
        self._clips: ClipIndex | None = None

    def clip_cache(self) -> ClipCache:
        """The clip cache of this DataModule's settings (under :meth:`cache_root`)."""
        return ClipCache(self.cache_root(), self.prepare_settings(), self.max_frames)

    # ------------------------------------------------------------ magnification
    @property
    def linear_alpha(self) -> float:
        """The alpha of :func:`magnify_clips` applied to every batch.

        0: none; phase magnification is in the entries.
        """
        s = self.magnify_settings
        return s.alpha if s is not None and s.method == "linear" else 0.0

    def magnified_cache(self) -> MagnifiedClipCache | None:
        """The cache of phase-magnified clips, or None (no phase magnification)."""
        s = self.magnify_settings
        if s is None or s.method != "phase":
            return None
        return MagnifiedClipCache(self.clip_cache(), s)

    def check_magnify(self) -> None:
        """Check ``magnify`` against the frame rate and crop size of every database read.

        Raises:
            ValueError: one line naming the setting, the database, its frame rate and the crop.
        """
        s = self.magnify_settings
        if s is None:
            return
        for name in self.datasets:
            for database, fps in frame_rates(name).items():
                try:
                    s.check(fps, self.image_size)
                except ValueError as e:
                    rate = "frame rate unknown" if fps is None else f"{fps:g} fps"
                    raise ValueError(
                        f"data.init_args.magnify, database {database} ({rate}, "
                        f"{self.image_size} px crops): {e}"
                    ) from None

    # ------------------------------------------------------------------ clips
    def prepare_data(self) -> ClipReport:
        """Prepare the pair entries (:class:`MERDataModule`), then build the clip entries.

        Returns:
            The :class:`~moext.data.clips.cache.ClipReport` (the pairs' report in ``pairs``).

        Raises:
            DatasetError: some clips could not be prepared (each named with its file and why).
        """
        self.check_magnify()
        pairs = super().prepare_data()
        samples, _, _ = self.read_samples()
        report = prepare_clips(samples, self.cache_root(), self.prepare_settings(), self.max_frames)
        report.pairs = pairs
        report.raise_failures("{n} clip(s) could not be prepared")
        if self.magnified_cache() is not None:
            report.magnified = prepare_magnified(
                samples,
                self.clip_cache(),
                self.magnify_settings,
                workers=self.prepare_workers,
            )
            report.magnified.raise_failures("{n} clip(s) could not be magnified")
        return report

    def setup(self, stage: str | None = None) -> None:
        """Check ``magnify`` (:meth:`check_magnify`), then set up as the pairs' DataModule.

        See :meth:`moext.data.pairs.datamodule.MERDataModule.setup`.
        """
        self.check_magnify()
        super().setup(stage)

    def inputs_loaded(self) -> bool:
        """Whether :meth:`load_inputs` has run (a second ``setup`` does nothing)."""
        return self._clips is not None

    def load_inputs(self) -> None:
        """Find (and check the headers of) the clip entries of ``self.samples``."""
        self._clips = index_clips(
            self.samples, self.cache_root(), self.prepare_settings(), self.max_frames
        )
        if self.magnified_cache() is not None:  # the same frames, magnified
            entries = index_magnified(self.samples, self.clip_cache(), self.magnify_settings)
            self._clips = replace(self._clips, entries=entries)
        long = [f for f in self._clips.frames if f.subsampled]
        if long:
            log.warning(
                "%d of %d clips are longer than max_frames=%d and served subsampled (onset, "
                "apex and offset kept): %s",
                len(long),
                len(self.samples),
                self.max_frames,
                ", ".join(
                    f"{s.id} ({f.total})"
                    for s, f in zip(self.samples, self._clips.frames, strict=True)
                    if f.subsampled
                )[:2000],
            )

    def frame_numbers(self, index: int) -> tuple[int, ...]:
        """The frame numbers of the frames served for sample ``index``.

        E.g. to name the max-key frame AKMNet finds.
        """
        return self._clips.frames[index].numbers

    def _dataset(self, positions: Tensor) -> ClipDataset:
        labels = torch.tensor(self.labels, dtype=torch.long)
        ids = [s.id for s in self.samples]
        cache = self.magnified_cache() or self.clip_cache()
        return ClipDataset(cache, self._clips, positions, labels, ids)

    # ------------------------------------------------------------ dataloaders
    def train_positions(self) -> Tensor:
        """The training clips of one epoch before shuffling (balanced when ``balance``)."""
        if not self.balance or len(self.train_index) == 0:
            return self.train_index
        labels = torch.tensor(self.labels, dtype=torch.long)
        return balanced_positions(self.train_index, labels, self.seed)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-balanced) padded batches of the training clips."""
        ds = ExpandedPairs(self._dataset(self.train_positions()), self.expansion)
        return self.shuffled_loader(ds, collate_fn=collate_clips)

    def _eval_loader(self) -> DataLoader:
        return DataLoader(
            self._dataset(self.held_out_index()),
            batch_size=self.eval_batch_size,
            collate_fn=collate_clips,
            num_workers=self.num_workers,
        )

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """uint8 -> float in [0, 1] on the device; linear magnification; augmentation.

        The clip augmentation applies when training.
        """
        frames = batch["frames"].float().div_(255)
        frames = magnify_clips(frames, batch["mask"], self.linear_alpha)
        if self.trainer is not None and self.trainer.training and self.augment != "none":
            if self.augment == "crop":
                frames = zoom_crop_clips(frames, self.crop_zoom, self.crop_p)
            else:
                frames = augment_clips(frames, self.max_rotation, self.flip_p)
            frames = frames * batch["mask"][:, :, None, None, None]  # padding stays zero
        return {**batch, "frames": frames}
