"""The class-balanced batch sampler (SRMCL's authors', seeded): batch structure, epoch length,
data-parallel ranks, and the ``sampler: balanced`` option of the DataModules."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from moext.data.flow.datamodule import FlowDataModule
from moext.data.pairs.augment import ExpandedPairs
from moext.data.pairs.datamodule import MERDataModule, PairDataset
from moext.data.sampler import BalancedBatchSampler, balanced_sizes

#: 4 classes of 9, 5, 3 and 1 items: a minority class smaller than n_samples.
LABELS = torch.tensor([0] * 9 + [1] * 5 + [2] * 3 + [3])


def class_structure(batch: list[int], labels: torch.Tensor) -> list[tuple[int, int]]:
    """(class, count) of each run of one class in a batch, in order."""
    runs: list[tuple[int, int]] = []
    for c in labels[batch].tolist():
        runs = runs[:-1] + [(c, runs[-1][1] + 1)] if runs and runs[-1][0] == c else [*runs, (c, 1)]
    return runs


def test_each_batch_holds_n_classes_distinct_classes_of_n_samples_each():
    sampler = BalancedBatchSampler(None, LABELS, n_classes=3, n_samples=2, items=200, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == (200 - 1) // 6
    drawn = Counter()
    for batch in batches:
        runs = class_structure(batch, LABELS)
        classes = [c for c, _ in runs]
        assert len(classes) == 3 == len(set(classes))  # grouped by class, all distinct
        for c, n in runs:  # n_samples each; the class of one item gives that one
            assert n == (1 if c == 3 else 2)
        assert len(batch) == len(set(batch))  # never a duplicate within a batch
        drawn.update(classes)
    # classes drawn uniformly: each in 3/4 of the batches (33 batches: 24.75 expected)
    assert all(18 <= drawn[c] <= 31 for c in range(4)), drawn


def test_within_a_class_items_come_without_replacement_until_too_few_remain():
    """Class 1 has 5 items and n_samples 2: a pass takes 2 + 2, skips the fifth, reshuffles."""
    sampler = BalancedBatchSampler(None, LABELS, n_classes=4, n_samples=2, items=400, seed=1)
    taken = [[i for i in batch if LABELS[i] == 1] for batch in (sampler.draw() for _ in range(6))]
    for first, second in zip(taken[0::2], taken[1::2], strict=True):
        assert len(set(first + second)) == 4  # one pass: 4 distinct of the 5
    assert sampler.used[1] == 0  # reshuffled after the second take of every pass


def test_epoch_length_is_the_authors_loop_and_at_least_one_batch():
    for items, size, expected in ((18, 6, 2), (19, 6, 3), (24, 6, 3), (25, 6, 4), (5, 6, 1)):
        sampler = BalancedBatchSampler(None, LABELS, 3, 2, items=items)
        assert (sampler.batch_size, len(sampler)) == (size, expected)
        assert len(list(sampler)) == expected


def test_batches_are_reproducible_from_the_seed():
    def epochs(seed: int) -> list[list[int]]:
        sampler = BalancedBatchSampler(None, LABELS, 2, 3, items=60, seed=seed)
        return list(sampler) + list(sampler)  # two epochs: positions carry over

    assert epochs(7) == epochs(7) and epochs(7) != epochs(8)
    first, second = epochs(7)[:9], epochs(7)[9:]
    assert first != second


def test_data_parallel_ranks_take_alternate_whole_balanced_batches():
    class Sized(Dataset):
        def __len__(self) -> int:
            return len(LABELS)

    one = list(BalancedBatchSampler(None, LABELS, 3, 2, items=100, seed=3))
    ranks = []
    for rank in (0, 1):
        shard = DistributedSampler(Sized(), num_replicas=2, rank=rank, shuffle=True)
        ranks.append(list(BalancedBatchSampler(shard, LABELS, 3, 2, items=100, seed=3)))
    assert len(ranks[0]) == len(ranks[1]) == len(one) // 2 == 8
    assert ranks[0] == one[0:16:2] and ranks[1] == one[1:16:2]  # the one-process batches, dealt


def test_lightning_rebuilds_it_with_the_rank_s_distributed_sampler():
    """Under DDP Lightning replaces the loader's sampler by a DistributedSampler and rebuilds the
    batch sampler with it (what ``Trainer`` does to a training DataLoader)."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler

    dataset = PairDataset(torch.zeros(len(LABELS), 2, 3, 2, 2), LABELS, torch.arange(len(LABELS)))
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        batches = BalancedBatchSampler(SequentialSampler(dataset), LABELS, 3, 2, items=100)
        loader = DataLoader(dataset, batch_sampler=batches)
    rank1 = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True)
    rebuilt = _update_dataloader(loader, rank1)
    assert isinstance(rebuilt.batch_sampler, BalancedBatchSampler)
    assert (rebuilt.batch_sampler.rank, rebuilt.batch_sampler.ranks) == (1, 2)
    one = list(BalancedBatchSampler(None, LABELS, 3, 2, items=100))
    assert [b["index"].tolist() for b in rebuilt] == one[1:16:2]


def test_sizes_default_to_every_class_and_the_batch_size():
    assert balanced_sizes(present=4, batch_size=10, n_classes=None, n_samples=None) == (4, 2)
    assert balanced_sizes(present=4, batch_size=10, n_classes=2, n_samples=None) == (2, 5)
    assert balanced_sizes(present=3, batch_size=2, n_classes=5, n_samples=4) == (3, 4)  # lowered
    with pytest.raises(ValueError, match="labels >= 0"):
        BalancedBatchSampler(None, [-1, -1], 1, 1)


# --- the DataModule option ---------------------------------------------------------------------


def test_datamodule_refuses_sampler_settings_that_cannot_work():
    common = {"datasets": ["synth"], "protocol": "synth-3"}
    with pytest.raises(ValueError, match="sampler must be one of"):
        MERDataModule(**common, sampler="weighted")
    with pytest.raises(ValueError, match="balanced_classes is set but sampler is 'shuffle'"):
        MERDataModule(**common, balanced_classes=3)
    with pytest.raises(ValueError, match="balanced_samples must be >= 1"):
        MERDataModule(**common, sampler="balanced", balanced_samples=0)
    with pytest.raises(ValueError, match="needs task classify"):
        MERDataModule(task="pretrain", datasets=["synth"], sampler="balanced")
    with pytest.raises(ValueError, match="cannot be combined"):
        MERDataModule(**common, sampler="balanced", device_cache=True)


def _balanced_loader_batches(dm: MERDataModule, dataset: Dataset) -> list[list[int]]:
    return [batch["label"].tolist() for batch in dm.shuffled_loader(dataset, drop_last=True)]


def test_every_datamodule_serves_balanced_batches_through_its_training_loader():
    """The pair and flow DataModules (and the clip one, tests/data/test_clips.py) share the loader;
    expansion counts in the epoch, not as duplicates."""
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 2)
    rows = PairDataset(torch.zeros(len(labels), 2, 3, 2, 2), labels, torch.arange(len(labels)))
    for cls in (MERDataModule, FlowDataModule):
        dm = cls(
            datasets=["synth"], protocol="synth-3", sampler="balanced", balanced_samples=2, seed=5
        )
        batches = _balanced_loader_batches(dm, ExpandedPairs(rows, 3))
        assert len(batches) == (3 * 11 - 1) // 6
        assert all(sorted(b) == [0, 0, 1, 1, 2, 2] for b in batches)  # 3 classes x 2 each
        assert batches == _balanced_loader_batches(dm, ExpandedPairs(rows, 3))  # seeded
    torch.manual_seed(0)
    shuffled = MERDataModule(datasets=["synth"], protocol="synth-3", batch_size=6)
    plain = _balanced_loader_batches(shuffled, ExpandedPairs(rows, 3))
    assert not all(sorted(b) == [0, 0, 1, 1, 2, 2] for b in plain)  # the option matters


def test_a_config_that_leaves_the_sampler_alone_fingerprints_as_before_it_existed():
    from types import SimpleNamespace

    from moext.experiment.run_folder import stage_settings

    def settings(**data):
        values = {"sampler": "shuffle", "balanced_classes": None, "balanced_samples": None}
        namespace = {"data": {"init_args": {"batch_size": 4, **values, **data}}}
        return stage_settings(SimpleNamespace(namespace=SimpleNamespace(as_dict=lambda: namespace)))

    assert settings() == {"data.init_args.batch_size": 4}  # what a folder recorded before holds
    assert settings(sampler="balanced")["data.init_args.sampler"] == "balanced"
    assert settings(sampler="balanced", balanced_classes=3)["data.init_args.balanced_classes"] == 3
