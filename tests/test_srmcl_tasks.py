"""SRMCL's tasks: the joint objective's terms, the prototype memory (per-epoch initialisation,
per-batch update, checkpoints), and the checks against the data."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from moext.nn.srmcl import SRMCLConfig, momentum_update
from moext.tasks import SRMCLClassifyTask, SRMCLPretrainTask


class RandomFlows(Dataset):
    """Flow images in [0, 1] whose class shows as a bright patch at a class-dependent place."""

    def __init__(self, n: int = 24, size: int = 32) -> None:
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        flow = torch.rand(3, self.size, self.size, generator=g) * 0.2 + 0.4
        c = i % 3
        flow[:, 8 * c : 8 * c + 8, 8:16] = 1.0
        return {"flow": flow, "label": torch.tensor(c), "index": torch.tensor(i)}


def trainer(tmp_path, **kw):
    kw.setdefault("max_epochs", 1)
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )


def test_joint_objective_logs_every_term_and_the_memory_is_saved_in_checkpoints(tmp_path):
    torch.manual_seed(0)
    task = SRMCLClassifyTask(net=SRMCLConfig.tiny(), num_classes=3, lr=1e-3)
    assert not task.net.memory.prototypes.any()  # a fresh model (= a fresh fold): empty memory
    t = trainer(tmp_path, max_epochs=2)
    t.fit(task, DataLoader(RandomFlows(), batch_size=8, shuffle=True))
    assert {"train/loss_ce", "train/loss_sr", "train/loss_pmcl"} <= set(t.callback_metrics)
    protos = task.net.memory.prototypes
    torch.testing.assert_close(protos.norm(dim=1), torch.ones(3))
    ckpt = tmp_path / "c.ckpt"
    t.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert torch.equal(state["net.memory.prototypes"], protos)  # saved in checkpoints
    restored = SRMCLClassifyTask.load_from_checkpoint(ckpt)
    assert torch.equal(restored.net.memory.prototypes, protos)


def test_epoch_start_sets_the_memory_to_class_means_then_each_batch_moves_it(tmp_path):
    torch.manual_seed(0)
    task = SRMCLClassifyTask(net=SRMCLConfig.tiny(), num_classes=3, lr=1e-3)
    seen = {}

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.setdefault(batch_idx, module.net.memory.prototypes.clone())

    original = SRMCLClassifyTask.update_memory
    updates = []

    def spy_update(self, features, labels):
        updates.append((self.net.memory.prototypes.clone(), features, labels))
        original(self, features, labels)

    task.update_memory = spy_update.__get__(task)
    t = trainer(tmp_path, callbacks=[Spy()])
    t.fit(task, DataLoader(RandomFlows(), batch_size=8))
    start = seen[0]
    assert start.any() and torch.allclose(start.norm(dim=1), torch.ones(3))  # class means
    before, features, labels = updates[0]
    torch.testing.assert_close(before, start)
    torch.testing.assert_close(seen[1], momentum_update(start, features, labels, 0.1))
    torch.testing.assert_close(features.norm(dim=1), torch.ones(len(labels)))


def test_switched_off_terms_are_absent_and_leave_the_memory_alone():
    torch.manual_seed(0)
    task = SRMCLClassifyTask(net=SRMCLConfig.tiny(), num_classes=3, weight_sr=0, weight_pmcl=0)
    task.train()
    batch = next(iter(DataLoader(RandomFlows(), batch_size=6)))
    logits = task.logits(batch)
    assert task._train_out[1] == []  # no decoding without SER
    assert set(task.loss_terms(batch, logits)) == {"ce"} and task._update is None
    full = SRMCLClassifyTask(net=SRMCLConfig.tiny(), num_classes=3).train()
    assert set(full.loss_terms(batch, full.logits(batch))) == {"ce", "sr", "pmcl"}


def test_pretraining_reconstructs_and_its_checkpoint_feeds_the_classifier(tmp_path):
    torch.manual_seed(0)
    pre = SRMCLPretrainTask(net=SRMCLConfig.tiny(), lr=1e-3, mask_site="patches", mask_rounds=2)
    t = trainer(tmp_path)
    t.fit(pre, DataLoader(RandomFlows(), batch_size=8))
    assert {"train/loss", "train/loss_rec1", "train/loss_rec2"} <= set(t.callback_metrics)
    ckpt = tmp_path / "pre.ckpt"
    t.save_checkpoint(ckpt)
    clf = SRMCLClassifyTask(net=SRMCLConfig.tiny(), num_classes=3, pretrained=str(ckpt))
    assert clf.loaded_keys and all(k.startswith(("encoder.", "decoder.")) for k in clf.loaded_keys)
    for k in clf.loaded_keys:
        assert torch.equal(clf.net.state_dict()[k], pre.net.state_dict()[k])
    from moext.tasks.checkpoints import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError, match="embed_dim"):
        wider = SRMCLConfig.tiny()
        wider.embed_dim = 64
        SRMCLClassifyTask(net=wider, num_classes=3, pretrained=str(ckpt))


def test_data_that_does_not_fit_the_network_is_refused():
    task = SRMCLClassifyTask(net=SRMCLConfig.tiny(), num_classes=3)
    dm = SimpleNamespace(inputs="flow", image_size=32, num_channels=4, num_classes=3)
    task._trainer = SimpleNamespace(datamodule=dm)
    with pytest.raises(ValueError, match="in_channels=3 but the data serves 4"):
        task.setup("fit")
    dm.inputs, dm.num_channels = "pairs", 3
    with pytest.raises(ValueError, match="needs 'flow' inputs"):
        task.setup("fit")
    for bad in ({"mask_ratio": 1.0}, {"mask_site": "pixels"}, {"memory_init": "always"}):
        with pytest.raises(ValueError):
            SRMCLClassifyTask(net=SRMCLConfig.tiny(), **bad)
