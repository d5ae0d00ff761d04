import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from moext.nn.moext import MoExtConfig
from moext.tasks import MoExtClassifyTask, MoExtPretrainTask
from moext.tasks.checkpoints import CheckpointMismatchError
from moext.tasks.moext_views import (
    AUGMENTATIONS,
    apex_mask,
    choose_operations,
    expansion_views,
    grayscale,
)
from tests.test_moext_model import tiny_config


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


def operation_of(view: torch.Tensor) -> str:
    """Which augmentation made a view of a constant-colour image: noise varies in space,
    grayscale makes the channels equal, contrast keeps both properties of the original."""
    if view.flatten(1).std(dim=1).max() > 1e-4:
        return "noise"
    if torch.allclose(view[0], view[1]) and torch.allclose(view[1], view[2]):
        return "grayscale"
    return "contrast"


def test_expansion_views_use_different_operations_in_a_set():
    """ "two operations are randomly selected": per set the m - 1 extra views use m - 1
    different operations (drawn with replacement, a third of the sets repeated one)."""
    torch.manual_seed(0)
    n = 90
    colour = torch.tensor([0.7, 0.4, 0.2]).view(1, 3, 1, 1)
    onset = (torch.rand(n, 1, 1, 1) * 0.3 + colour).expand(n, 3, 4, 4).contiguous()
    views = expansion_views(onset, onset.clone(), m=3)  # (n, 6, 3, 4, 4)
    pairs = [(operation_of(views[i, 1]), operation_of(views[i, 2])) for i in range(n)]
    assert all(a != b for a, b in pairs)
    assert {frozenset(p) for p in pairs} == {
        frozenset(p)
        for p in [("noise", "contrast"), ("noise", "grayscale"), ("contrast", "grayscale")]
    }
    for i in range(n):  # onset and apex of a set share each view's operation
        assert operation_of(views[i, 4]) == pairs[i][0] and operation_of(views[i, 5]) == pairs[i][1]
    every = expansion_views(onset[:8], onset[:8], m=4)
    assert all(
        sorted(operation_of(every[i, v]) for v in (1, 2, 3)) == sorted(AUGMENTATIONS)
        for i in range(8)
    )
    ops = choose_operations(500, 2)
    assert ops.shape == (500, 2) and (ops[:, 0] != ops[:, 1]).all()
    with pytest.raises(ValueError, match=r"m - 1 = 4 .* only 3"):
        expansion_views(onset, onset, m=5)
    with pytest.raises(ValueError, match=r"views \(m\) must be in \[1, 4\]"):
        MoExtPretrainTask(net=tiny_config(), views=5)


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
    with pytest.raises(ValueError, match="reconstruction_reduction"):
        MoExtPretrainTask(net=tiny_config(), reconstruction_reduction="sum")
    with pytest.raises(ValueError, match="dropout"):
        MoExtClassifyTask(net=tiny_config(), dropout=1.0)
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
    from moext.data.pairs.datamodule import DeviceBatches

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


def test_classifier_has_no_dropout_unless_asked():
    """The paper's classifier has no dropout: the default is 0; a config can still set one."""
    assert MoExtClassifyTask(net=tiny_config()).net.classifier[0].p == 0.0
    assert MoExtClassifyTask(net=tiny_config(), dropout=0.2).net.classifier[0].p == 0.2


def test_reconstruction_reduction_reaches_the_loss():
    torch.manual_seed(0)
    onset, apex = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    per_pixel = MoExtPretrainTask(net=tiny_config())
    per_image = MoExtPretrainTask(net=tiny_config(), reconstruction_reduction="per_image_sum")
    per_image.load_state_dict(per_pixel.state_dict())
    per_pixel.eval(), per_image.eval()
    with torch.no_grad():
        a, _ = per_pixel.losses(onset, apex)
        b, _ = per_image.losses(onset, apex)
    assert b["re"].item() == pytest.approx(3 * 64 * 64 * a["re"].item(), rel=1e-4)


def synth_pretraining_data(root):
    from moext.data import MERDataModule

    return MERDataModule(
        task="pretrain",
        datasets=["synth"],
        root=str(root),
        macro=True,
        image_size=64,
        landmarks="none",
        batch_size=9,
        expansion=1,
    )


#: The demo's network widths (experiments/moext/demo_pretrain.yaml): wide enough that an
#: L2-normalised f behaves as at paper scale (the narrower tiny net's L_st sometimes fires even
#: then).
DEMO_NET = dict(
    backbone="tiny-32",
    image_size=64,
    feature_dim=64,
    branch_channels=64,
    decoder_stem_channels=32,
    decoder_up_channels=[32, 32, 16, 16],
    decoder_refine_channels=16,
    decoder_refine_blocks=1,
    projection_hidden_dim=128,
    projection_dim=64,
)


def test_both_contrastive_terms_fire_in_the_first_epoch(synth_root, tmp_path):
    """On the generated database the hinges of L_st and L_ss are active (share > 0) in the
    first epoch with the default f, and the shares are logged as train/active_st and
    train/active_ss (with the old normalised f, L_st's share is 0: the next test)."""
    L.seed_everything(0, verbose=False)
    task = MoExtPretrainTask(net=MoExtConfig(**DEMO_NET), image_every_n_epochs=0)
    t = trainer(tmp_path)
    t.fit(task, datamodule=synth_pretraining_data(synth_root))
    metrics = t.callback_metrics
    assert 0 < metrics["train/active_st"] <= 1 and 0 < metrics["train/active_ss"] <= 1
    assert metrics["train/loss_st"] > 0 and metrics["train/loss_ss"] > 0


def test_normalised_projection_leaves_l_st_dead_and_says_so(synth_root, tmp_path):
    """With f L2-normalised (the old default) and eps = 0.3, no L_st hinge fires at
    initialisation (measured: 0 of all on 6 seeds; unnormalised 0.31-1.0), and a training epoch
    without an active L_st hinge is warned about."""
    dm = synth_pretraining_data(synth_root)
    dm.prepare_data()
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    for seed in range(3):
        shares = {}
        for normalize in (False, True):
            torch.manual_seed(seed)
            net = MoExtConfig(**DEMO_NET, projection_normalize=normalize)
            with torch.no_grad():
                _, active, _ = MoExtPretrainTask(net=net).losses_and_activity(
                    batch["onset"], batch["apex"]
                )
            shares[normalize] = active["st"].item()
        assert shares[True] == 0 < shares[False], (seed, shares)
    L.seed_everything(0, verbose=False)
    task = MoExtPretrainTask(
        net=MoExtConfig(**DEMO_NET, projection_normalize=True), image_every_n_epochs=0
    )
    t = trainer(tmp_path)
    with pytest.warns(UserWarning, match=r"train/active_st = 0 in epoch 0.*L_st"):
        t.fit(task, datamodule=dm)
    assert t.callback_metrics["train/active_st"] == 0 < t.callback_metrics["train/active_ss"]
