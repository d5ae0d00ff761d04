"""The DataModule's training set under each augmentation mode, on the generated database."""

from types import SimpleNamespace

import pytest
import torch

from moext.data import MERDataModule


@pytest.fixture
def datamodule(synth_root, tmp_path):
    """A classification DataModule on the generated database (fold sub01), prepared and set up."""

    def make(**options) -> MERDataModule:
        dm = MERDataModule(
            task="classify",
            protocol="synth-3",
            datasets=["synth"],
            root=str(synth_root),
            fold="synth/sub01",
            image_size=32,
            landmarks="none",
            cache_dir=str(tmp_path / "cache"),
            batch_size=4,
            **options,
        )
        dm.prepare_data()
        dm.setup("fit")
        dm.trainer = SimpleNamespace(training=True, strategy=None)  # what the hooks ask of one
        return dm

    return make


@pytest.mark.parametrize("device_cache", [False, True])
def test_static_expansion_serves_stored_copies_and_leaves_batches_alone(datamodule, device_cache):
    dm = datamodule(augment="static", expansion=3, device_cache=device_cache)
    n_train = len(dm.train_index)
    pairs, labels, index, expansion = dm.training_pairs()
    assert len(pairs) == 3 * n_train and expansion == 1
    assert torch.equal(pairs[:n_train], dm._pairs[dm.train_index])  # copy 0: the originals
    assert torch.equal(index, dm.train_index.repeat(3)) and torch.equal(
        labels[:n_train], labels[n_train : 2 * n_train]
    )
    assert dm.training_pairs()[0] is pairs  # made once, then kept
    seen = []
    for batch in dm.train_dataloader():
        out = dm.on_after_batch_transfer(batch, 0)
        assert torch.equal(out["onset"], batch["onset"].float() / 255)  # no per-batch augmentation
        seen += batch["index"].tolist()
    assert len(seen) >= 3 * n_train - dm.batch_size  # same epoch length as the tenfold epoch


def test_device_augmentation_redraws_every_batch_and_keeps_one_copy(datamodule):
    dm = datamodule(augment="device", expansion=3)
    pairs, _, _, expansion = dm.training_pairs()
    assert len(pairs) == len(dm.train_index) and expansion == 3
    batch = next(iter(dm.train_dataloader()))
    out = dm.on_after_batch_transfer(batch, 0)
    assert not torch.equal(out["onset"], batch["onset"].float() / 255)


def test_unknown_augmentation_is_refused(synth_root):
    with pytest.raises(ValueError, match="augment must be"):
        MERDataModule(protocol="synth-3", datasets=["synth"], augment="sometimes")
    with pytest.raises(ValueError, match="device_cache"):
        MERDataModule(protocol="synth-3", datasets=["synth"], augment="cpu", device_cache=True)
