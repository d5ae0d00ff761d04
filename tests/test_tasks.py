import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from moext.tasks import MoExtClassifyTask, MoExtPretrainTask
from moext.tasks.checkpoints import CheckpointMismatchError
from moext.tasks.moext_views import apex_mask, expansion_views, grayscale
from tests.test_models import tiny_config


class RandomPairs(Dataset):
    """Pairs whose apex is the onset shifted by one pixel; label = i % 3."""

    def __len__(self):
        return 24

    def __getitem__(self, i):
        onset = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i))
        return {
            "onset": onset,
            "apex": onset.roll(1, dims=-1),
            "label": torch.tensor(i % 3),
            "index": torch.tensor(i),
        }


def trainer(tmp_path, **kw):
    return L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )


def test_expansion_views_layout():
    onset, apex = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    v = expansion_views(onset, apex, m=3)
    assert v.shape == (4, 6, 3, 8, 8)
    assert torch.equal(v[:, 0], onset) and torch.equal(v[:, 3], apex)  # view 0 = original
    assert not torch.equal(v[:, 1], onset)
    assert apex_mask(3).tolist() == [False, False, False, True, True, True]


def test_grayscale_view_has_equal_channels():
    g = grayscale(torch.rand(2, 3, 4, 4))
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])


@pytest.mark.parametrize("switch", ["weight_st", "weight_ss", "weight_re"])
def test_loss_terms_switch_off(switch):
    task = MoExtPretrainTask(net=tiny_config(), **{switch: 0.0})
    terms, recon = task.losses(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert switch.split("_")[1] not in terms
    assert recon.shape == (2, 3, 64, 64)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError):
        MoExtPretrainTask(net=tiny_config(), views=0)
    with pytest.raises(ValueError):
        MoExtPretrainTask(net=tiny_config(), margin_ss=0)
    with pytest.raises(ValueError):
        MoExtClassifyTask(net=tiny_config(), num_classes=1)


def test_pretrain_bf16_then_classify_loads_weights(tmp_path):
    torch.manual_seed(0)
    pre = MoExtPretrainTask(net=tiny_config(), image_every_n_epochs=1)
    t = trainer(tmp_path, precision="bf16-mixed")
    t.fit(pre, DataLoader(RandomPairs(), batch_size=6))
    assert {"train/loss_re", "train/loss_st", "train/loss_ss"} <= set(t.callback_metrics)
    assert (tmp_path / "reconstructions" / "epoch_000.png").is_file()
    ckpt = tmp_path / "pre.ckpt"
    t.save_checkpoint(ckpt)
    clf = MoExtClassifyTask(net=tiny_config(), pretrained=str(ckpt), num_classes=3)
    assert clf.loaded_keys and all(
        k.startswith(("separator.backbone", "separator.shape", "motion")) for k in clf.loaded_keys
    )
    for k in clf.loaded_keys:
        assert torch.equal(clf.net.state_dict()[k], pre.net.state_dict()[k])
    t2 = trainer(tmp_path, precision="bf16-mixed")
    t2.fit(clf, DataLoader(RandomPairs(), batch_size=6))
    out = t2.predict(clf, DataLoader(RandomPairs(), batch_size=6))
    assert out[0]["probs"].shape == (6, 3)
    assert torch.allclose(out[0]["probs"].sum(-1), torch.ones(6))


def test_mismatched_checkpoint_is_loud(tmp_path):
    pre = MoExtPretrainTask(net=tiny_config())
    t = trainer(tmp_path)
    t.strategy.connect(pre)
    ckpt = tmp_path / "pre.ckpt"
    t.save_checkpoint(ckpt)
    # a different architecture
    other = tiny_config()
    other.feature_dim = 16
    with pytest.raises(CheckpointMismatchError, match="feature_dim"):
        MoExtClassifyTask(net=other, pretrained=str(ckpt))
    # a renamed key: named in the error
    state = torch.load(ckpt, weights_only=False)
    state["state_dict"] = {
        k.replace("net.motion.", "net.motion_x."): v for k, v in state["state_dict"].items()
    }
    bad = tmp_path / "bad.ckpt"
    torch.save(state, bad)
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint.*motion\.c1"):
        MoExtClassifyTask(net=tiny_config(), pretrained=str(bad))
    # unexpected keys, inside a transferred part or outside every known part: named
    good = torch.load(ckpt, weights_only=False)
    for extra in ("net.separator.extra.weight", "net.extra_head.weight"):
        state["state_dict"] = {**good["state_dict"], extra: torch.zeros(1)}
        torch.save(state, bad)
        with pytest.raises(CheckpointMismatchError, match=rf"unexpected.*{extra[4:]}"):
            MoExtClassifyTask(net=tiny_config(), pretrained=str(bad))
    # a corrupt file: named, with why
    bad.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(CheckpointMismatchError, match=r"bad\.ckpt: cannot be read"):
        MoExtClassifyTask(net=tiny_config(), pretrained=str(bad))
    # a checkpoint with no MoExt weights at all
    state["state_dict"] = {"model.w": torch.zeros(1)}
    torch.save(state, bad)
    with pytest.raises(CheckpointMismatchError, match="prefix"):
        MoExtClassifyTask(net=tiny_config(), pretrained=str(bad))


def test_channels_last_and_compile_keep_checkpoint_keys(tmp_path):
    task = MoExtPretrainTask(
        net=tiny_config(), channels_last=True, compile=True, image_every_n_epochs=0
    )
    keys = set(task.state_dict())
    t = trainer(tmp_path, max_steps=1)
    t.fit(task, DataLoader(RandomPairs(), batch_size=6))
    assert set(task.state_dict()) == keys  # compile did not rename parameters
    assert task.net.separator.backbone.layers[0].weight.is_contiguous(
        memory_format=torch.channels_last
    )


def test_device_batches_cover_each_pair_expansion_times_and_shard_ranks():
    from moext.data.datamodule import DeviceBatches

    pairs = (
        torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1, 1).expand(10, 2, 3, 2, 2).contiguous()
    )
    labels, idx = torch.arange(10) % 3, torch.arange(10)
    seen = []
    for rank in range(2):
        batches = DeviceBatches(
            pairs, labels, idx, batch_size=5, expansion=3, device="cpu", rank=rank, world_size=2
        )
        assert len(batches) == 3
        for b in batches:
            assert torch.equal(b["onset"][:, 0, 0, 0].long(), b["index"]) and torch.equal(
                b["label"], b["index"] % 3
            )
            seen += b["index"].tolist()
    assert sorted(seen) == sorted(list(range(10)) * 3)  # both ranks together: every pair 3 times


def test_network_and_data_image_sizes_must_agree():
    from types import SimpleNamespace

    task = MoExtPretrainTask(net=tiny_config())  # 64 px
    task.trainer = SimpleNamespace(datamodule=SimpleNamespace(image_size=48))
    with pytest.raises(ValueError, match=r"net.image_size=64 but data.init_args.image_size=48"):
        task.setup("fit")


def test_checkpoints_and_configs_of_the_old_layout_still_load(tmp_path, monkeypatch):
    """Before the package was layered, MoExtConfig was moext.models.MoExtConfig (pickled in every
    checkpoint's hyper-parameters) and the tasks were moext.tasks.PretrainTask / ClassifyTask."""
    import pickle

    from jsonargparse._typehints import import_object

    from moext.nn.moext import MoExtConfig

    assert import_object("moext.tasks.PretrainTask") is MoExtPretrainTask
    assert import_object("moext.tasks.ClassifyTask") is MoExtClassifyTask
    pre = MoExtPretrainTask(net=tiny_config())
    t = trainer(tmp_path)
    t.strategy.connect(pre)
    ckpt = tmp_path / "old.ckpt"
    monkeypatch.setattr(MoExtConfig, "__module__", "moext.models")  # pickled as the old path
    t.save_checkpoint(ckpt)
    assert b"moext.models" in ckpt.read_bytes() or "moext.models" in str(
        pickle.dumps(tiny_config())
    )
    monkeypatch.undo()
    clf = MoExtClassifyTask(net=tiny_config(), pretrained=str(ckpt), num_classes=3)
    assert clf.loaded_keys
    assert MoExtPretrainTask.load_from_checkpoint(ckpt).net.cfg == tiny_config()
