"""Class-balanced training batches: the batch sampler of SRMCL's authors, seeded.

:class:`BalancedBatchSampler` follows ``BalancedBatchSampler(dataset, n_classes, n_samples)`` of
SRMCL's code (``Dataloader/batchsize_balance.py``; docs/methods/srmcl.md describes it), and is an
option of every DataModule (``data.init_args.sampler: balanced``, with ``balanced_classes`` and
``balanced_samples``; :class:`moext.data.pairs.datamodule.MERDataModule`):

- a batch holds ``n_classes`` distinct classes drawn uniformly without replacement from the
  classes present, each giving ``n_samples`` items, grouped by class;
- within a class, items come in a shuffled order without replacement; once fewer than
  ``n_samples`` of that order remain unread, the class is reshuffled and starts again, the
  remaining ones skipped (as the authors' code); a class smaller than ``n_samples`` gives all its
  items every time it is drawn (a smaller batch, never a duplicate within a batch);
- the per-class orders and positions carry over from one epoch to the next (the authors' code
  does this too);
- an epoch is ``max(1, (N - 1) // B)`` batches, ``N`` the items of an epoch (the training samples
  times ``expansion``) and ``B = n_classes * n_samples``: what the authors' loop yields (``while
  count + B < N``; their ``__len__`` says ``N // B``, one more when ``B`` divides ``N``), and at
  least one batch.

Ours, where the authors' code differs: every draw comes from one ``torch.Generator`` seeded by
``seed`` (the DataModule's ``seed``, which every fold is built with; the authors use the
unseeded global ``np.random``), so a run is reproducible; ``n_classes`` larger than the classes
present is lowered to them with a warning (the authors' ``np.random.choice`` raises); the class
order is sorted before drawing.

Data-parallel (DDP): Lightning hands every rank a ``DistributedSampler`` in place of the
``sampler`` argument (it rebuilds this batch sampler with it); only its ``rank`` and
``num_replicas`` are read. Every rank draws the same sequence of balanced batches and takes every
``num_replicas``-th batch from its rank on, so each rank's batch keeps the class structure and the
ranks' batches together are the batches one process would draw; an epoch is ``max(1, batches //
num_replicas)`` batches per rank. Splitting each batch across ranks instead would break the class
balance of what each rank sees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, Sampler
from torch.utils.data.distributed import DistributedSampler

log = logging.getLogger(__name__)

#: ``data.init_args.sampler`` values: a shuffled epoch (default) or class-balanced batches.
SAMPLERS = ("shuffle", "balanced")


def balanced_sizes(
    present: int, batch_size: int, n_classes: int | None, n_samples: int | None
) -> tuple[int, int]:
    """The classes per batch and items per class of a balanced batch.

    Args:
        present: classes present in the training data (K).
        batch_size: the DataModule's ``batch_size``.
        n_classes: ``balanced_classes`` (None: every class present; lowered to K with a warning).
        n_samples: ``balanced_samples`` (None: ``max(1, batch_size // n_classes)``).

    Returns:
        ``(n_classes, n_samples)``.
    """
    classes = present if n_classes is None else n_classes
    if classes > present:
        log.warning(
            "sampler balanced: balanced_classes=%d but the training data has only %d classes; "
            "batches hold %d",
            classes,
            present,
            present,
        )
        classes = present
    samples = max(1, batch_size // classes) if n_samples is None else n_samples
    return classes, samples


class BalancedBatchSampler(BatchSampler):
    """Batches of ``n_classes`` classes x ``n_samples`` items each (module docstring).

    Args:
        sampler: a ``DistributedSampler`` (rank and number of ranks are read from it) or any
            sampler over the dataset (one process; its order is not used).
        labels: (N,) the class of each item the yielded indices point at.
        n_classes: classes per batch (>= 1; lowered to the classes present).
        n_samples: items per class and batch (>= 1).
        items: items in an epoch (default ``len(labels)``; ``expansion`` times more when the
            dataset repeats its items).
        seed: seed of every draw.

    Yields:
        Lists of indices into ``labels``, grouped by class.
    """

    def __init__(
        self,
        sampler: Sampler | None,
        labels: Sequence[int] | Tensor,
        n_classes: int,
        n_samples: int,
        items: int | None = None,
        seed: int = 0,
    ) -> None:
        self.labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if len(self.labels) == 0:
            raise ValueError("sampler balanced: no training items")
        if (self.labels < 0).any():
            raise ValueError("sampler balanced: every training item needs a class (labels >= 0)")
        if n_classes < 1 or n_samples < 1:
            raise ValueError(
                f"sampler balanced: balanced_classes and balanced_samples must be >= 1, got "
                f"{n_classes} and {n_samples}"
            )
        self.classes = self.labels.unique().tolist()  # sorted
        self.n_classes = min(n_classes, len(self.classes))
        self.n_samples = n_samples
        super().__init__(sampler or range(len(self.labels)), self.n_classes * n_samples, False)
        self.items = len(self.labels) if items is None else items
        self.seed = seed
        if isinstance(sampler, DistributedSampler):
            self.rank, self.ranks = sampler.rank, sampler.num_replicas
        else:
            self.rank, self.ranks = 0, 1
        self.generator = torch.Generator().manual_seed(seed)
        self.members = {c: torch.nonzero(self.labels == c).flatten() for c in self.classes}
        self.order = {c: self._shuffled(c) for c in self.classes}
        self.used = dict.fromkeys(self.classes, 0)

    def _shuffled(self, c: int) -> Tensor:
        members = self.members[c]
        return members[torch.randperm(len(members), generator=self.generator)]

    @property
    def batches(self) -> int:
        """Balanced batches one process draws per epoch: ``max(1, (items - 1) // B)``."""
        return max(1, (self.items - 1) // self.batch_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return max(1, self.batches // self.ranks)

    def draw(self) -> list[int]:
        """One balanced batch (and the per-class positions advanced)."""
        picked = torch.randperm(len(self.classes), generator=self.generator)[: self.n_classes]
        batch: list[int] = []
        for c in (self.classes[i] for i in picked.tolist()):
            start = self.used[c]
            batch += self.order[c][start : start + self.n_samples].tolist()
            self.used[c] += self.n_samples
            if self.used[c] + self.n_samples > len(self.order[c]):
                self.order[c], self.used[c] = self._shuffled(c), 0
        return batch

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(len(self) * self.ranks):
            batch = self.draw()  # every rank draws every batch: the ranks stay in step
            if b % self.ranks == self.rank:
                yield batch
