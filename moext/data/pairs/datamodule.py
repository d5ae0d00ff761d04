"""The LightningDataModule: sample records -> cached aligned crops -> onset/apex pair batches.

One class serves both stages:

* ``task: pretrain`` — every micro clip (and, with ``macro: true``, every macro clip, whose
  apex is its pseudo apex: the ``pseudo_apex_n``-th frame after the onset) of ``datasets``,
  minus ``exclude_subjects``. No labels.
* ``task: classify`` — the micro clips labelled by ``protocol``; ``fold`` names the held-out
  subject (``"dataset/subject"``, LOSO), or with ``holdout: database`` the held-out database
  (``"casme2"``, leave-one-database-out). The held-out subject is the test and predict set and
  is never part of training; there is deliberately no validation set, so no epoch or checkpoint
  can be chosen by looking at the held-out subject.

Batches are dicts: ``onset``, ``apex`` (B, 3, H, W) float in [0, 1] once on the device,
``label`` (B,) long (-1 when unlabelled), ``index`` (B,) long (position in ``samples``); with
``protocol: au`` also ``aus`` (B, A) float, the multi-hot targets of the ``aus`` the DataModule
detects (added by ``on_before_batch_transfer``, so every DataModule of this family serves them).
Pairs travel as uint8 and become float on the device; the geometric augmentation (mirror +
rotation in [-max_rotation, max_rotation], shared by onset and apex) runs there on whole
batches (``augment: device``), per item with albumentations in the workers (``augment: cpu``),
or once before training into stored copies (``augment: static``). The paper's tenfold expansion
of the training set is ``expansion: 10``. Training batches are a shuffled epoch, or, with
``sampler: balanced``, class-balanced batches (:mod:`moext.data.sampler`; the flow and clip
DataModules inherit the option).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from moext.data.pairs.augment import (
    ExpandedPairs,
    augment_pair,
    augment_pairs,
    expand_statically,
    pair_transform,
)
from moext.data.pairs.cache import PrepareSettings, load_pairs, prepare
from moext.data.protocols import (
    DEFAULT_AUS,
    au_classes,
    au_targets,
    check_aus,
    fold_id,
    get_protocol,
    holdout_fold,
    select,
)
from moext.data.readers import frame_rates, read_dataset
from moext.data.readers.aus import au_name
from moext.data.readers.spreadsheet import STRAY_NOTE
from moext.data.records import Correction, DatasetError, Rejection, Sample
from moext.data.sampler import SAMPLERS, BalancedBatchSampler, balanced_sizes

log = logging.getLogger(__name__)

DEFAULT_FOLDERS = {
    "casme2": "CASME2",
    "samm": "SAMM",
    "smic": "SMIC",
    "casme3": "CASME3",
    "synth": "synth",
    "casme": "CASME",
    "mmew": "MMEW",
    "4dme": "4DME",
}
ROOT_ENV = "MOEXT_DATA_ROOT"
CDE_DATASETS = ("casme2", "samm", "smic")


def split_by_fold(
    samples: list[Sample], fold: str | None, holdout: str = "subject"
) -> tuple[Tensor, Tensor]:
    """LOSO split: positions of the training samples and of the held-out subject's samples.

    Args:
        samples: the labelled samples of a protocol.
        fold: the held-out subject (``"dataset/subject"``), or database (``"casme2"``, with
            ``holdout="database"``), or None (everything trains).
        holdout: what a fold holds out (:func:`moext.data.protocols.holdout_fold`).

    Returns:
        ``(train_index, test_index)``, (N_train,) and (N_test,) long tensors.

    Raises:
        AssertionError: a subject on both sides (a guard: it cannot happen by construction).
    """
    is_test = torch.tensor([holdout_fold(s, holdout) == fold for s in samples], dtype=torch.bool)
    train_index = torch.nonzero(~is_test).flatten()
    test_index = torch.nonzero(is_test).flatten()
    shared = {fold_id(samples[i]) for i in train_index.tolist()} & {
        fold_id(samples[i]) for i in test_index.tolist()
    }
    if shared:
        raise AssertionError(f"subject leakage between train and test: {sorted(shared)}")
    return train_index, test_index


def _check_sampler(
    task: str,
    device_cache: bool,
    sampler: str,
    balanced_classes: int | None,
    balanced_samples: int | None,
) -> None:
    """Refuse a ``sampler`` setting that cannot work, in one line."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    given = {"balanced_classes": balanced_classes, "balanced_samples": balanced_samples}
    for name, value in given.items():
        if value is not None and sampler != "balanced":
            raise ValueError(f"{name} is set but sampler is {sampler!r}: set sampler: balanced")
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if sampler == "balanced" and task != "classify":
        raise ValueError("sampler balanced draws classes: it needs task classify (labels)")
    if sampler == "balanced" and device_cache:
        raise ValueError(
            "sampler balanced and device_cache cannot be combined (device_cache batches on the "
            "device in its own order): drop one"
        )


class DeviceBatches:
    """Training batches indexed straight from a pair tensor that lives on the device.

    The fast input path: the fold's uint8 crops are moved to the accelerator once, and each
    batch is a gather there (no workers, no per-item Python, no host-to-device copies). Every
    rank draws the same permutation (seeded by ``seed`` and the epoch) and takes its own
    stride of it, like a DistributedSampler.

    Args:
        pairs: (N, 2, 3, H, W) uint8.
        labels: (N,) long.
        indices: (N,) long, positions in the DataModule's sample list.
        batch_size: pairs per batch.
        expansion: times each pair appears per epoch.
        device: where the tensors are kept.
        rank: this process's place among the data-parallel ranks.
        world_size: the number of data-parallel ranks.
        seed: base seed of the per-epoch permutations.
    """

    def __init__(
        self,
        pairs: Tensor,
        labels: Tensor,
        indices: Tensor,
        batch_size: int,
        expansion: int,
        device: torch.device | str,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        self.pairs = pairs.to(device)
        self.labels = labels.to(device)
        self.indices = indices.to(device)
        self.batch_size, self.expansion = batch_size, expansion
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        per_rank = len(self.pairs) * self.expansion // self.world_size
        return max(1, per_rank // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.pairs) * self.expansion, generator=g) % len(self.pairs)
        order = order[self.rank :: self.world_size].to(self.pairs.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield {
                "onset": self.pairs[idx, 0],
                "apex": self.pairs[idx, 1],
                "label": self.labels[idx],
                "index": self.indices[idx],
            }


class PairDataset(Dataset):
    """Pairs from one uint8 tensor.

    Args:
        pairs: (N, 2, 3, H, W) uint8, [onset, apex].
        labels: (N,) long.
        indices: (N,) long, positions in the DataModule's sample list.
        transform: optional albumentations pair transform (CPU augmentation).
    """

    def __init__(self, pairs: Tensor, labels: Tensor, indices: Tensor, transform: Any = None):
        self.pairs, self.labels, self.indices = pairs, labels, indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        onset, apex = self.pairs[i, 0], self.pairs[i, 1]
        if self.transform is not None:
            on, ap = augment_pair(
                self.transform, onset.permute(1, 2, 0).numpy(), apex.permute(1, 2, 0).numpy()
            )
            onset = torch.from_numpy(np.ascontiguousarray(on)).permute(2, 0, 1)
            apex = torch.from_numpy(np.ascontiguousarray(ap)).permute(2, 0, 1)
        return {"onset": onset, "apex": apex, "label": self.labels[i], "index": self.indices[i]}


class MERDataModule(L.LightningDataModule):
    """Micro-expression onset/apex pairs for pretraining or LOSO classification.

    ``inputs = "pairs"``: what it serves, checked against the task's ``inputs`` before training.

    Args:
        task: ``"pretrain"`` or ``"classify"``.
        datasets: databases to draw from: ``casme``, ``casme2``, ``samm``, ``smic``, ``casme3``,
            ``mmew``, ``4dme``, ``synth``. For ``protocol: cde3`` they default to the three
            MEGC2019 databases.
        protocol: classification protocol (``cde3``, ``casme2-5``, ``samm-5``, ``casme3-3``,
            ``mmew-7``, ``4dme-5``, ``composite-3``, ``synth-3``, ...; ``au`` for AU detection:
            see ``aus``); unused when pretraining.
        root: folder holding the databases (default: the ``MOEXT_DATA_ROOT`` environment variable).
        paths: per-database folder, relative to ``root`` or absolute (defaults: CASME2, SAMM,
            SMIC, CASME3, CASME, MMEW, 4DME, synth).
        reader_options: per-database keyword arguments for its reader (e.g. a spreadsheet name).
        fold: held-out subject, ``"dataset/subject"`` (classification; None = no test set), or
            database with ``holdout: database``.
        exclude_subjects: fold ids kept out of the pretraining set (per-fold pretraining): a
            subject (``"casme2/sub01"``) or a whole database (``"casme2"``).
        macro: pretraining also uses macro-expression clips (ablation "w/o macro": false).
        pseudo_apex_n: a macro clip's apex is the N-th frame after its onset (paper 5).
        image_size: side of the aligned face crops (paper 224).
        landmarks: ``"dlib"``, ``"fan"`` or ``"none"`` (frames already aligned: resize only).
        landmark_weights: local weights file for the landmark backend.
        on_no_face: ``"error"`` or ``"next"`` (use the first later frame with a face).
        cache_dir: where aligned crops are cached (default: ``<root>/.moext_cache``).
        cache_key: how cache entries identify a frame besides its name and size: ``stat``
            (its mtime: the cache survives moving the data root or copying it with ``cp -p`` /
            ``rsync -a``) or ``content`` (a hash of its bytes: survives any copy, reads every
            frame once per run); see :mod:`moext.data.entries`.
        batch_size: pairs per batch (paper 20).
        expansion: times each training pair appears per epoch (paper: tenfold).
        augment: ``"device"`` (batched, on the accelerator, a fresh transform per appearance),
            ``"cpu"`` (albumentations in the workers), ``"static"`` (``expansion - 1``
            augmented copies of each training pair made once, then only indexed: no per-epoch
            augmentation cost, ``expansion`` times the memory) or ``"none"``.
        max_rotation: rotation range in degrees (paper 10).
        flip_p: probability of mirroring a pair.
        num_workers: DataLoader workers.
        device_cache: keep the training pairs on the accelerator and batch them there
            (:class:`DeviceBatches`; needs ``augment`` ``device``, ``static`` or ``none``).
        seed: seed of the device-cache batch order, of the static expansion and of the
            balanced sampler.
        prepare_workers: processes aligning faces in ``prepare_data`` (0: this process).
        sampler: training batches: ``shuffle`` (a shuffled epoch) or ``balanced`` (classification
            only: :class:`~moext.data.sampler.BalancedBatchSampler`, SRMCL's authors' class-balanced
            batches; not with ``device_cache``).
        balanced_classes: classes per balanced batch (default: every class of the training fold).
        balanced_samples: items per class in a balanced batch (default: ``batch_size //
            balanced_classes``, at least 1); a batch holds ``balanced_classes *
            balanced_samples`` items, whatever ``batch_size`` says.
        aus: with ``protocol: au``, the AU numbers whose multi-hot targets the batches carry
            as ``aus`` (default :data:`~moext.data.protocols.DEFAULT_AUS`); their names
            (``AU1``, ...) are the classes.
        holdout: what a fold holds out: ``subject`` (LOSO, across every database read) or
            ``database`` (leave-one-database-out: ``fold`` names a database).
    """

    #: What the batches hold (the task's ``inputs`` must match): onset/apex pairs.
    inputs = "pairs"

    def __init__(
        self,
        task: Literal["pretrain", "classify"] = "classify",
        datasets: list[str] | None = None,
        protocol: str | None = None,
        root: str | None = None,
        paths: dict[str, str] | None = None,
        reader_options: dict[str, dict[str, Any]] | None = None,
        fold: str | None = None,
        exclude_subjects: list[str] | None = None,
        macro: bool = True,
        pseudo_apex_n: int = 5,
        image_size: int = 224,
        landmarks: str = "dlib",
        landmark_weights: str | None = None,
        on_no_face: str = "error",
        cache_dir: str | None = None,
        cache_key: Literal["stat", "content"] = "stat",
        batch_size: int = 20,
        expansion: int = 10,
        augment: Literal["device", "cpu", "static", "none"] = "device",
        max_rotation: float = 10.0,
        flip_p: float = 0.5,
        num_workers: int = 0,
        device_cache: bool = False,
        seed: int = 0,
        prepare_workers: int = 0,
        sampler: Literal["shuffle", "balanced"] = "shuffle",
        balanced_classes: int | None = None,
        balanced_samples: int | None = None,
        aus: list[int] | None = None,
        holdout: Literal["subject", "database"] = "subject",
    ) -> None:
        super().__init__()
        if task not in ("pretrain", "classify"):
            raise ValueError(f"task must be 'pretrain' or 'classify', got {task!r}")
        if task == "classify" and not protocol:
            raise ValueError(
                "task 'classify' needs a protocol (cde3, casme2-5, samm-5, casme3-3, synth-3)"
            )
        if augment not in ("device", "cpu", "static", "none"):
            raise ValueError(
                f"augment must be 'device', 'cpu', 'static' or 'none', got {augment!r}"
            )
        if device_cache and augment == "cpu":
            raise ValueError(
                "device_cache batches on the device: use augment 'device', 'static' or 'none', "
                "not 'cpu'"
            )
        if expansion < 1 or batch_size < 1:
            raise ValueError("expansion and batch_size must be >= 1")
        _check_sampler(task, device_cache, sampler, balanced_classes, balanced_samples)
        self.task = task
        self.protocol = protocol
        if datasets is None:
            datasets = list(CDE_DATASETS) if protocol == "cde3" else []
        if not datasets:
            raise ValueError(
                "datasets is empty: name the databases to read (e.g. [casme2, casme3])"
            )
        read = [database for name in datasets for database in frame_rates(name)]
        twice = sorted({d for d in read if read.count(d) > 1})
        if twice:
            raise ValueError(
                f"datasets {list(datasets)} reads {', '.join(twice)} twice (megc2019 reads "
                "casme2, samm and smic): name each database once"
            )
        self.datasets = list(datasets)
        self.root = root
        self.paths = dict(paths or {})
        self.reader_options = dict(reader_options or {})
        self.fold = fold
        self.exclude_subjects = set(exclude_subjects or [])
        self.macro = macro
        self.pseudo_apex_n = pseudo_apex_n
        self.image_size = image_size
        self.landmarks = landmarks
        self.landmark_weights = landmark_weights
        self.on_no_face = on_no_face
        self.cache_dir = cache_dir
        self.cache_key = cache_key
        self.batch_size = batch_size
        self.expansion = expansion
        self.augment = augment
        self.max_rotation = max_rotation
        self.flip_p = flip_p
        self.num_workers = num_workers
        self.device_cache = device_cache
        self.seed = seed
        self.prepare_workers = prepare_workers
        self.sampler = sampler
        self.balanced_classes, self.balanced_samples = balanced_classes, balanced_samples
        self.aus = self._check_au_settings(aus)
        if holdout not in ("subject", "database"):
            raise ValueError(f"holdout must be 'subject' or 'database', got {holdout!r}")
        self.holdout = holdout
        self._au_targets: Tensor | None = None
        self.classes: tuple[str, ...] = ()
        self.samples: list[Sample] = []
        self.labels: list[int] = []
        self.rejected: list[Rejection] = []
        self.corrected: list[Correction] = []
        self._pairs: Tensor | None = None
        self._static: tuple[Tensor, Tensor, Tensor] | None = None

    def _check_au_settings(self, aus: list[int] | None) -> tuple[int, ...]:
        """The AU numbers to serve.

        ``aus`` (default :data:`DEFAULT_AUS`) under ``protocol: au``, none otherwise.

        Raises:
            ValueError: ``aus`` without ``protocol: au``, or not a valid AU list.
        """
        is_au = bool(self.protocol) and get_protocol(self.protocol).action_units
        if not is_au:
            if aus:
                raise ValueError(
                    f"aus {list(aus)} are AU-detection targets: they need protocol 'au', not "
                    f"{self.protocol!r}"
                )
            return ()
        return check_aus(DEFAULT_AUS if aus is None else aus)

    # ----------------------------------------------------------------- records
    def data_root(self) -> Path:
        """``root``, else the environment variable :data:`ROOT_ENV` names."""
        root = self.root or os.environ.get(ROOT_ENV)
        if not root:
            raise DatasetError(
                f"no data root: set data.root in the config or the {ROOT_ENV} environment variable"
            )
        return Path(root).expanduser()

    def dataset_root(self, name: str) -> Path:
        """The folder of database ``name``: ``paths``' or the default, under :meth:`data_root`."""
        folder = Path(self.paths.get(name, DEFAULT_FOLDERS.get(name, name))).expanduser()
        return folder if folder.is_absolute() else self.data_root() / folder

    def read_samples(self) -> tuple[list[Sample], list[int], tuple[str, ...]]:
        """All samples of this stage (before the fold split), their labels and the class names."""
        samples: list[Sample] = []
        self.rejected, self.corrected = [], []
        for name in self.datasets:
            options = dict(self.reader_options.get(name, {}))
            if self.task == "pretrain" and self.macro and name == "casme3":
                options.setdefault("kind", "both")  # part A's macro clips feed pretraining
            result = read_dataset(name, self.dataset_root(name), **options)
            self.rejected += result.rejected
            self.corrected += result.corrected
            samples.extend(result.samples)
        if self.task == "pretrain":
            excluded = self.exclude_subjects
            kept = [
                s
                for s in samples
                if (self.macro or s.kind == "micro")
                and fold_id(s) not in excluded
                and s.dataset not in excluded
            ]
            return kept, [-1] * len(kept), ()
        micro = [s for s in samples if s.kind == "micro"]
        labelled = select(self.protocol, micro)
        classes = au_classes(self.aus) if self.aus else tuple(labelled.classes)
        return list(labelled.samples), list(labelled.labels), classes

    def data_notes(self, limit: int = 20) -> list[str]:
        """What the readers did not take as it was (from the last :meth:`read_samples`).

        Every rejected row (a clip lost: a frame missing, a bad cell) and every file in a clip
        folder that is not named like a frame, one line each; other corrections as a count.

        Args:
            limit: the most lines of each kind.
        """
        lines = []
        if self.rejected:
            lines.append(
                f"{len(self.rejected)} annotated clip(s) rejected by the readers, not used:"
            )
            lines += [f"  {r.clip} ({r.source}): {r.reason}" for r in self.rejected[:limit]]
        strays = [c for c in self.corrected if STRAY_NOTE in c.reason]
        if strays:
            lines.append(
                f"{len(strays)} clip folder(s) hold files not named like frames (not read):"
            )
            lines += [f"  {c.clip} ({c.source}): {c.reason}" for c in strays[:limit]]
        if len(self.rejected) > limit or len(strays) > limit:
            lines.append("  ... (all of them: moext data summary)")
        others = len(self.corrected) - len(strays)
        if others:
            names = " / ".join(self.datasets)
            lines.append(
                f"{others} annotation row(s) corrected (known quirks; details: moext data summary "
                f"--dataset {names})"
            )
        return lines

    def _report_lost_samples(self) -> None:
        """Say which rejected clips a fold's training set (and its test set) lacks."""
        if self.fold is None or not self.rejected:
            return
        lost_test = [r for r in self.rejected if r.clip.startswith(self.fold + "/")]
        lost_train = [r for r in self.rejected if r not in lost_test]
        for what, lost in (("training set", lost_train), ("held-out set", lost_test)):
            if lost:
                shown = ", ".join(f"{r.clip} ({r.reason})" for r in lost[:5])
                more = f" and {len(lost) - 5} more" if len(lost) > 5 else ""
                log.warning(
                    "fold %s: its %s lacks %d clip(s) the readers rejected: %s%s",
                    self.fold,
                    what,
                    len(lost),
                    shown,
                    more,
                )

    @property
    def num_classes(self) -> int | None:
        """The number of classes once the samples are read, else None."""
        return len(self.classes) if self.classes else None

    def subjects(self) -> list[str]:
        """The LOSO folds of this stage: sorted fold ids of the samples.

        Their subjects, or with ``holdout: database`` their databases.
        """
        if not self.samples:
            self.samples, self.labels, self.classes = self.read_samples()
        return sorted({holdout_fold(s, self.holdout) for s in self.samples})

    # ------------------------------------------------------------------ crops
    def prepare_settings(self) -> PrepareSettings:
        """The crop settings of this DataModule (they key its cache entries)."""
        return PrepareSettings(
            size=self.image_size,
            backend=self.landmarks,
            weights=self.landmark_weights,
            on_no_face=self.on_no_face,
            pseudo_apex_n=self.pseudo_apex_n,
            cache_key=self.cache_key,
        )

    def cache_root(self) -> Path:
        """``cache_dir``, else ``.moext_cache`` under :meth:`data_root`."""
        return (
            Path(self.cache_dir).expanduser()
            if self.cache_dir
            else self.data_root() / ".moext_cache"
        )

    def prepare_data(self):
        """Align and cache every crop this stage needs (once; later runs reuse the cache).

        Returns:
            The :class:`moext.data.pairs.cache.PrepareReport`.

        Raises:
            DatasetError: some clips could not be prepared (each named with its file and why).
        """
        samples, _, _ = self.read_samples()
        report = prepare(
            samples, self.cache_root(), self.prepare_settings(), workers=self.prepare_workers
        )
        report.raise_failures("{n} clip(s) could not be prepared")
        return report

    def setup(self, stage: str | None = None) -> None:
        """Read the samples, split off the held-out subject, and load what this module serves."""
        if self.samples and self.inputs_loaded():
            return
        self.samples, self.labels, self.classes = self.read_samples()
        if not self.samples:
            raise DatasetError(
                f"no samples for task={self.task} protocol={self.protocol} datasets={self.datasets}"
            )
        self._au_targets = None
        folds = {holdout_fold(s, self.holdout) for s in self.samples}
        if self.fold is not None and self.fold not in folds:
            what = "a subject" if self.holdout == "subject" else "a database"
            raise ValueError(
                f"fold {self.fold!r} is not {what} of this data; {what[2:]}s: {sorted(folds)}"
            )
        self.train_index, self.test_index = split_by_fold(self.samples, self.fold, self.holdout)
        self._report_lost_samples()
        self.load_inputs()

    def inputs_loaded(self) -> bool:
        """Whether :meth:`load_inputs` has run (a second ``setup`` does nothing)."""
        return self._pairs is not None

    def load_inputs(self) -> None:
        """Load what this DataModule serves for ``self.samples``: the cached onset/apex pairs.

        DataModules serving other inputs (flow fields, clips) override this, :meth:`inputs_loaded`,
        the dataloaders and ``on_after_batch_transfer``.
        """
        self._pairs = load_pairs(self.samples, self.cache_root(), self.prepare_settings())

    def _subset(self, index: Tensor, transform: Any = None) -> PairDataset:
        labels = torch.tensor(self.labels, dtype=torch.long)
        return PairDataset(self._pairs[index], labels[index], index, transform)

    # ------------------------------------------------------------ dataloaders
    def training_pairs(
        self, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """The training set as served: pairs, labels, positions, times each row appears.

        The times each row appears per epoch.

        Returns:
            ``(pairs, labels, index, expansion)``: (M, 2, 3, H, W) uint8 on ``device``, (M,) long,
            (M,) long. With ``augment: static``, M = ``expansion`` x N_train (the stored copies,
            made on ``device`` once and kept) and each row appears once per epoch; otherwise
            M = N_train and each row appears ``expansion`` times.
        """
        labels = torch.tensor(self.labels, dtype=torch.long)[self.train_index]
        if self.augment != "static":
            return (
                self._pairs[self.train_index].to(device),
                labels,
                self.train_index,
                self.expansion,
            )
        device = torch.empty(0, device=device).device  # "cuda" -> "cuda:0", as tensors report it
        if self._static is None or self._static[0].device != device:
            pairs = self._pairs[self.train_index].to(device)
            expanded = expand_statically(
                pairs, self.expansion, self.max_rotation, self.flip_p, self.seed
            )
            log.info(
                "static expansion: %d pairs x %d = %d rows, %.2f GB",
                len(pairs),
                self.expansion,
                len(expanded),
                expanded.numel() / 1e9,
            )
            self._static = (
                expanded,
                labels.repeat(self.expansion),
                self.train_index.repeat(self.expansion),
            )
        return (*self._static, 1)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        """Shuffled training batches: on the device (``device_cache``) or through a DataLoader."""
        if self.device_cache:
            strategy = self.trainer.strategy if self.trainer is not None else None
            device = strategy.root_device if strategy else "cpu"
            pairs, labels, index, expansion = self.training_pairs(device)
            return DeviceBatches(
                pairs,
                labels,
                index,
                self.batch_size,
                expansion,
                device,
                strategy.global_rank if strategy else 0,
                strategy.world_size if strategy else 1,
                self.seed,
            )
        transform = (
            pair_transform(self.max_rotation, self.flip_p) if self.augment == "cpu" else None
        )
        pairs, labels, index, expansion = self.training_pairs()
        ds = ExpandedPairs(PairDataset(pairs, labels, index, transform), expansion)
        return self.shuffled_loader(ds, drop_last=len(ds) > self.batch_size)  # BatchNorm: > 1

    def shuffled_loader(self, dataset: Dataset, **options: Any) -> DataLoader:
        """The training DataLoader over ``dataset``.

        Shuffled, ``batch_size`` (or, with ``sampler: balanced``, :meth:`balanced_batches`, and
        ``drop_last`` ignored), this module's workers (kept between epochs); ``options`` go to
        the DataLoader (``collate_fn``, ...).

        ``dataset`` is a training dataset with ``labels``, one per item, or an
        :class:`~moext.data.pairs.augment.ExpandedPairs` of one.
        """
        workers = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}
        if self.sampler == "balanced":
            options.pop("drop_last", None)
            return DataLoader(
                dataset, batch_sampler=self.balanced_batches(dataset), **workers, **options
            )
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, **workers, **options)

    def balanced_batches(self, dataset: Dataset) -> BalancedBatchSampler:
        """The class-balanced batch sampler of a training dataset (``sampler: balanced``).

        Seeded by ``seed``; an epoch counts ``len(dataset)`` items (``expansion`` included).
        """
        base = dataset.base if isinstance(dataset, ExpandedPairs) else dataset
        labels = torch.as_tensor(base.labels, dtype=torch.long)
        n_classes, n_samples = balanced_sizes(
            len(labels.unique()), self.batch_size, self.balanced_classes, self.balanced_samples
        )
        return BalancedBatchSampler(
            SequentialSampler(base), labels, n_classes, n_samples, len(dataset), self.seed
        )

    def held_out_index(self) -> Tensor:
        """(N_test,) long positions of the held-out subject's samples (test and predict).

        Raises:
            ValueError: no fold is set.
        """
        if self.fold is None:
            raise ValueError("no held-out subject: set data.fold to test or predict")
        return self.test_index

    def _eval_loader(self) -> DataLoader:
        dataset = self._subset(self.held_out_index())
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        """Batches of the held-out subject's samples (:meth:`held_out_index`), in order."""
        return self._eval_loader()

    def predict_dataloader(self) -> DataLoader:
        """Batches of the held-out subject's samples (:meth:`held_out_index`), in order."""
        return self._eval_loader()

    def au_targets(self) -> Tensor:
        """(N, A) float multi-hot AU targets of ``self.samples`` (:attr:`aus`), made once."""
        if self._au_targets is None:
            self._au_targets = torch.from_numpy(au_targets(self.samples, self.aus))
        return self._au_targets

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``aus``: the batch's multi-hot AU targets ``aus`` (B, A), by its ``index``."""
        if not self.aus or not isinstance(batch, dict) or "index" not in batch:
            return batch
        index = batch["index"]
        return {**batch, "aus": self.au_targets().to(index.device)[index]}

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """uint8 -> float in [0, 1] on the device; the shared geometric augmentation when training."""
        onset = batch["onset"].float().div_(255)
        apex = batch["apex"].float().div_(255)
        if self.augment == "device" and self.trainer is not None and self.trainer.training:
            pairs = augment_pairs(torch.stack([onset, apex], dim=1), self.max_rotation, self.flip_p)
            onset, apex = pairs[:, 0], pairs[:, 1]
        return {**batch, "onset": onset, "apex": apex}

    def sample_table(self, index: Tensor | None = None) -> list[dict[str, Any]]:
        """Id, dataset, subject, fold and label of samples (all, or those at ``index``).

        With ``aus``, each AU's target too (``true_AU1``: 0 or 1).
        """
        idx = range(len(self.samples)) if index is None else index.tolist()
        rows = [
            {
                "sample": self.samples[i].id,
                "dataset": self.samples[i].dataset,
                "subject": self.samples[i].subject,
                "fold": holdout_fold(self.samples[i], self.holdout),
                "label": self.labels[i],
            }
            for i in idx
        ]
        if self.aus:
            for row, i in zip(rows, idx, strict=True):
                present = self.samples[i].au_numbers
                row.update({f"true_{au_name(a)}": int(a in present) for a in self.aus})
        return rows
