"""HTNet: layer shapes and parameter count of the authors' configuration, the code's token
order, local attention, the task's training / prediction / optimiser, and its configs (their
flow inputs, a LOSO run of the paper config through the CLI, a wrong setting stopped by the
preflight)."""

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from moext.nn.htnet import (
    BlockAttention,
    ChannelLayerNorm,
    HTNet,
    HTNetConfig,
    from_blocks,
    to_blocks,
)
from moext.tasks import HTNetClassifyTask
from tests.flow_baselines import (
    check_experiments,
    loso_paper_config,
    preflight_refuses,
    synth_overrides,
)

EXPERIMENTS = Path(__file__).parents[1] / "experiments" / "htnet"


def authors_count(block_repeats=(2, 2, 10), classes=3) -> int:
    """Parameters of the authors' ``HTNet(image_size=28, patch_size=7, dim=256, heads=3,
    num_hierarchies=3, block_repeats=(2, 2, 10), num_classes=3)`` (``main_HTNet.py:222-231``),
    summed from ``Model.py`` layer by layer. Width w = 256, 512, 1024 and heads 3, 6, 12 per
    level; the attention's inner width is heads * (w // heads) = 255, 510, 1020:

    - patch embedding, Conv 1x1 147 -> 256 with bias: 147 * 256 + 256 = 37,888
    - per transformer block: LayerNorm 2w; to_qkv 1x1 w -> 3 inner, no bias; to_out
      inner -> w + bias; LayerNorm 2w; FeedForward w -> 4w -> w with biases
      = 787,968 (w 256), 3,146,752 (w 512), 12,576,768 (w 1024); plus 1 position scalar per
      level (seq_len (4 // 4)^2 = 1)
    - aggregations: Conv 3x3 w -> 2w + bias, LayerNorm 4w: 1,181,184 and 4,721,664
    - head: LayerNorm 2048 + Linear 1024 -> 3: 5,123

    37,888 + (2 * 787,968 + 1) + 1,181,184 + (2 * 3,146,752 + 1) + 4,721,664
    + (10 * 12,576,768 + 1) + 5,123 = 139,582,982 (the authors' module, counted with
    ``sum(p.numel() for p in model.parameters())``, gives the same; (2, 2, 8): 114,429,446).
    """
    total = 3 * 7 * 7 * 256 + 256
    for level, depth in enumerate(block_repeats):
        w, heads = 256 * 2**level, 3 * 2**level
        inner = heads * (w // heads)
        block = 2 * w + w * 3 * inner + inner * w + w + 2 * w + w * 4 * w + 4 * w + 4 * w * w + w
        total += depth * block + 1
        if level < len(block_repeats) - 1:
            total += w * 2 * w * 9 + 2 * w + 2 * 2 * w
    return total + 2 * 1024 + 1024 * classes + classes


def test_the_authors_configuration_layer_by_layer():
    cfg = HTNetConfig()
    assert (cfg.grid, cfg.block_tokens) == (4, 1)  # every block holds one token
    with torch.device("meta"):
        net = HTNet(cfg, num_classes=3)
        seen = {}
        for name in ("patch_embedding", "levels.0.0", "levels.0.1", "levels.1.0", "levels.1.1"):
            net.get_submodule(name).register_forward_hook(
                lambda m, i, o, name=name: seen.update({name: (tuple(i[0].shape), tuple(o.shape))})
            )
        net.levels[2][0].register_forward_hook(lambda m, i, o: seen.update(top=tuple(o.shape)))
        logits = net(torch.rand(2, 3, 28, 28))
    assert seen["patch_embedding"] == ((2, 147, 4, 4), (2, 256, 4, 4))
    assert seen["levels.0.0"] == ((32, 256, 1, 1), (32, 256, 1, 1))  # 16 blocks per face
    assert seen["levels.0.1"] == ((2, 256, 4, 4), (2, 512, 2, 2))
    assert seen["levels.1.0"] == ((8, 512, 1, 1), (8, 512, 1, 1))
    assert seen["levels.1.1"] == ((2, 512, 2, 2), (2, 1024, 1, 1))
    assert seen["top"] == (2, 1024, 1, 1) and logits.shape == (2, 3)
    assert [len(level[0].blocks) for level in net.levels] == [2, 2, 10]
    assert [level[0].blocks[0][1].heads for level in net.levels] == [3, 6, 12]
    assert net.levels[0][0].blocks[0][1].qkv.out_channels == 3 * 255  # 3 heads of 85
    n = sum(p.numel() for p in net.parameters())
    assert n == authors_count() == 139_582_982
    with torch.device("meta"):
        eight = HTNet(HTNetConfig(block_repeats=(2, 2, 8)), num_classes=3)
    assert sum(p.numel() for p in eight.parameters()) == authors_count((2, 2, 8)) == 114_429_446


def test_patches_follow_the_codes_order_and_blocks_round_trip():
    net = HTNet(HTNetConfig.tiny(), num_classes=3)
    x = torch.arange(2 * 3 * 28 * 28, dtype=torch.float32).reshape(2, 3, 28, 28)
    patches = net.patches(x)  # einops 'b c (h p1) (w p2) -> b (p1 p2 c) h w'
    assert patches.shape == (2, 147, 4, 4)
    for b, p1, p2, c, h, w in [(0, 0, 0, 0, 0, 0), (1, 6, 2, 1, 3, 1), (0, 3, 5, 2, 2, 3)]:
        assert patches[b, (p1 * 7 + p2) * 3 + c, h, w] == x[b, c, h * 7 + p1, w * 7 + p2]
    grid = torch.randn(2, 5, 8, 8)
    blocks = to_blocks(grid, 4)  # 'b c (b1 h) (b2 w) -> (b b1 b2) c h w'
    assert blocks.shape == (32, 5, 2, 2)
    assert torch.equal(blocks[4 + 1], grid[0, :, 2:4, 2:4])  # image 0, block row 1, column 1
    assert torch.equal(from_blocks(blocks, 4), grid)


def test_attention_stays_inside_a_block_and_one_token_is_its_value():
    torch.manual_seed(0)
    cfg = HTNetConfig.tiny(image_size=56)  # an 8 x 8 grid: 2 x 2 tokens per block
    assert cfg.block_tokens == 4
    net = HTNet(cfg, num_classes=3).eval()
    first = net.levels[0][0]
    x = torch.randn(1, 16, 8, 8)
    y = from_blocks(first(to_blocks(x, 4)), 4)
    x2 = x.clone()
    x2[..., 0, 0] += torch.randn(16)  # a token of the top-left block
    y2 = from_blocks(first(to_blocks(x2, 4)), 4)
    changed = (y2 - y).abs().sum(1)[0] > 1e-6
    assert changed[:2, :2].all() and not changed[2:].any() and not changed[:, 2:].any()
    # one token per block (the authors' settings): softmax over one key, the output is out(v)
    attention = BlockAttention(6, heads=2).eval()
    t = torch.randn(5, 6, 1, 1)
    v = attention.qkv(t).chunk(3, dim=1)[2]
    torch.testing.assert_close(attention(t), attention.out(v))


def test_channel_layer_norm_is_the_codes_formula():
    norm = ChannelLayerNorm(4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    x = torch.randn(2, 4, 3, 5)
    var = torch.var(x, dim=1, unbiased=False, keepdim=True)  # Model.py:18-21
    expected = (x - x.mean(1, keepdim=True)) / (var + 1e-5).sqrt()
    expected = expected * norm.weight.view(1, 4, 1, 1) + norm.bias.view(1, 4, 1, 1)
    torch.testing.assert_close(norm(x), expected)


class Flows(Dataset):
    """Flow images in [0, 1] whose class shows as a bright area in one of three places."""

    def __len__(self):
        return 18

    def __getitem__(self, i):
        flow = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(i)) * 0.2
        c = i % 3
        flow[:, 9 * c : 9 * c + 9, 7:21] += 0.8
        return {"flow": flow, "label": torch.tensor(c), "index": torch.tensor(i)}


def test_training_and_prediction_steps(tmp_path):
    torch.manual_seed(0)
    task = HTNetClassifyTask(net=HTNetConfig.tiny(), num_classes=3, lr=1e-3)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    batch = next(iter(DataLoader(Flows(), batch_size=18)))
    before = F.cross_entropy(task(batch["flow"]), batch["label"]).item()
    trainer.fit(task, DataLoader(Flows(), batch_size=6, shuffle=True))
    assert trainer.callback_metrics["train/loss"] < before  # the training steps learn
    [out] = trainer.predict(task, DataLoader(Flows(), batch_size=18))
    assert out["probs"].shape == (18, 3) and torch.equal(out["index"], torch.arange(18))
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(18))
    assert torch.equal(out["pred"], out["probs"].argmax(1))
    ckpt = tmp_path / "htnet.ckpt"
    trainer.save_checkpoint(ckpt)
    restored = HTNetClassifyTask.load_from_checkpoint(ckpt, weights_only=True)  # config allowed
    assert restored.net.cfg == task.net.cfg
    torch.testing.assert_close(restored(batch["flow"]), task.eval()(batch["flow"]))


def test_the_authors_optimiser_is_the_default():
    with torch.device("meta"):
        task = HTNetClassifyTask()
    assert task.net.cfg == HTNetConfig() and task.num_classes == 3
    optimizer = task.configure_optimizers()  # main_HTNet.py:240: Adam(lr=5e-5), nothing else
    assert type(optimizer) is torch.optim.Adam
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"]) == (5e-5, 0.0, (0.9, 0.999))


def test_data_that_does_not_fit_the_network_is_refused():
    task = HTNetClassifyTask(net=HTNetConfig.tiny(), num_classes=3)
    dm = SimpleNamespace(inputs="flow", image_size=28, num_channels=2, num_classes=3)
    task._trainer = SimpleNamespace(datamodule=dm)
    with pytest.raises(ValueError, match="in_channels=3 but the data serves 2"):
        task.setup("fit")
    dm.num_channels, dm.image_size = 3, 64
    with pytest.raises(ValueError, match="net.image_size=28 but data.init_args.image_size=64"):
        task.setup("fit")
    dm.image_size, dm.inputs = 28, "pairs"
    with pytest.raises(ValueError, match="needs 'flow' inputs"):
        task.setup("fit")
    with pytest.raises(ValueError, match="HTNet expects flow images"):
        task(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize(
    "bad",
    [
        {"image_size": 30},  # not a multiple of the patch
        {"image_size": 42},  # a 6 x 6 grid cannot be cut into 4 x 4 blocks
        {"block_repeats": (2, 2)},
        {"dim": 2, "heads": 3},
        {"input_scale": 0.0},
    ],
)
def test_config_is_validated(bad):
    with pytest.raises(ValueError, match="HTNet"):
        HTNetConfig(**bad)


PAPER = {  # config -> protocol, datasets, channels, flow (method, crop size, flow size, regions)
    "cde3.yaml": (
        "cde3", ["casme2", "samm", "smic"], ["strain", "v", "u"], ("tvl1", 224, 28, "htnet")
    ),
    "cde3_precomputed.yaml": (
        "cde3", ["casme2", "samm", "smic"], ["strain", "v", "u"], ("tvl1", 224, 28, "htnet_code")
    ),
    "casme3_3class.yaml": (
        "casme3-3", ["casme3"], ["u", "v", "magnitude"], ("farneback", 28, None, "htnet")
    ),
    "demo.yaml": ("synth-3", ["synth"], ["strain", "v", "u"], ("tvl1", 64, 28, "htnet")),
}  # fmt: skip


def test_experiments_parse_and_fit_the_network(monkeypatch):
    monkeypatch.chdir(EXPERIMENTS.parents[1])
    configs = check_experiments(
        "htnet", "moext.tasks.HTNetClassifyTask", {k: v[:2] for k, v in PAPER.items()}
    )
    for name, cfg in zip(sorted(PAPER), configs, strict=True):
        model, data = cfg.model.init_args, cfg.data.init_args
        _, _, channels, flow = PAPER[name]
        assert data.channels == channels and data.flow_scaling == "minmax"
        assert (data.flow_method, data.image_size, data.flow_size, data.regions) == flow
        assert len(data.channels) == model.net.in_channels
        assert (data.flow_source == "precomputed") == (name == "cde3_precomputed.yaml")
        if name != "demo.yaml":  # the authors' settings (main_HTNet.py:161-164, 222-240)
            assert HTNetConfig(**vars(model.net)) == HTNetConfig()
            assert (model.lr, model.weight_decay, data.batch_size) == (5e-5, 0.0, 256)
            assert cfg.trainer.max_epochs == 800 and data.augment == "none"


#: The authors' network shrunk for a test (the layout and the 7 x 7 patches kept).
TINY = [
    "--model.init_args.net.dim", "16", "--model.init_args.net.heads", "2",
    "--model.init_args.net.block_repeats", "[1, 1, 1]", "--model.init_args.net.mlp_mult", "2",
]  # fmt: skip


def test_paper_config_runs_through_loso(synth_root, monkeypatch, tmp_path):
    """`moext loso` on experiments/htnet/cde3.yaml, narrowed, one epoch of one fold of the
    generated database: flow of the 32 x 32 dlib crops at 28 x 28, the four landmark areas."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    overrides = [*synth_overrides(size=32, landmarks="dlib"), *TINY]
    results = loso_paper_config(EXPERIMENTS / "cde3.yaml", overrides)
    assert results["overall"]["n"] == 6 and len(results["folds_missing"]) == 2


def test_preflight_refuses_a_flow_size_the_network_was_not_built_for(
    synth_root, monkeypatch, tmp_path, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    wrong = [*synth_overrides(size=64, landmarks="dlib"), "--data.init_args.flow_size", "56"]
    err = preflight_refuses(EXPERIMENTS / "cde3.yaml", wrong, capsys)
    assert "net.image_size=28 but data.init_args.flow_size=56" in err
