"""STSTNet: the authors' layer shapes and parameter count, training and prediction through the
task, its optimiser, its experiment configs (their flow inputs, a LOSO run of the paper config
and of its precomputed-flow twin through the CLI, a wrong setting stopped by the preflight)."""

from __future__ import annotations

import pytest
import torch

from moext.nn.ststnet import STSTNet, STSTNetConfig
from moext.tasks import STSTNetClassifyTask
from tests.flow_baselines import (
    EXPERIMENTS,
    FLOW_BASELINE_CONFIGS,
    check_experiments,
    check_predictions,
    cli_fit_then_predict,
    fit_then_predict,
    loso_paper_config,
    official_rows,
    preflight_refuses,
    refuses_other_data,
    synth_overrides,
    write_precomputed_flow,
)

CDE3 = EXPERIMENTS / "ststnet" / "cde3.yaml"


def shapes(net: STSTNet, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape of every layer of the first stream, of the pooled streams and the logits."""
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:
            seen.setdefault(name, tuple(output.shape))

        return hook

    for name, layer in net.streams[0].named_children():
        layer.register_forward_hook(record(name))
    seen["pooled"] = tuple(net.features(x).shape)
    seen["logits"] = tuple(net(x).shape)
    return seen


def test_layer_shapes_and_parameter_count_are_the_authors():
    """Paper Table I at 28 x 28 ("same" padding): conv 28 x 28, max-pool 10 x 10, the three
    streams (3 + 5 + 8 = 16 channels) average-pooled to 5 x 5 = 400 features.

    Parameters, STSTNet.mat's learnables = the PyTorch port's (main.py:15-28):
        conv 3x3, 3 -> 3: 3*3*3*3 + 3 = 84;  3 -> 5: 135 + 5 = 140;  3 -> 8: 216 + 8 = 224
        BatchNorm scale and shift: 2 * (3 + 5 + 8) = 32
        Linear 400 -> 3: 400*3 + 3 = 1203
        total 84 + 140 + 224 + 32 + 1203 = 1683
    (the issue's "1.7k"; the paper's Table V prints 0.00167 M and its text 1670, which no
    arrangement of Table I's layers gives: without BatchNorm it would be 1651).
    """
    net = STSTNet(STSTNetConfig(), num_classes=3).eval()
    assert sum(p.numel() for p in net.parameters()) == 1683
    assert [s[0].out_channels for s in net.streams] == [3, 5, 8]
    got = shapes(net, torch.rand(2, 3, 28, 28))
    assert got == {
        "0": (2, 3, 28, 28), "1": (2, 3, 28, 28), "2": (2, 3, 28, 28), "3": (2, 3, 10, 10),
        "4": (2, 3, 10, 10), "pooled": (2, 16, 5, 5), "logits": (2, 3),
    }  # fmt: skip
    # conv -> ReLU -> BatchNorm -> max-pool -> dropout, as main.py:31-35 and the .mat
    assert [type(m).__name__ for m in net.streams[0]] == [
        "Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Dropout",
    ]  # fmt: skip
    # the PyTorch port's padding 2: a 30 x 30 convolution, the same 10 x 10 after pooling
    port = STSTNet(STSTNetConfig(conv_padding=2), num_classes=3).eval()
    assert shapes(port, torch.rand(2, 3, 28, 28))["0"] == (2, 3, 30, 30)
    assert sum(p.numel() for p in port.parameters()) == 1683


def test_other_sizes_and_bad_inputs():
    net = STSTNet(STSTNetConfig(image_size=64), num_classes=5)
    assert net.classifier.in_features == 16 * 11 * 11  # 64 -> 22 -> 11
    assert net(torch.rand(3, 3, 64, 64)).shape == (3, 5)
    with pytest.raises(ValueError, match=r"expects flow images \(B, 3, 64, 64\)"):
        net(torch.rand(3, 3, 28, 28))
    for bad in ({"image_size": 2}, {"dropout": 1.0}, {"stream_channels": ()}):
        with pytest.raises(ValueError):
            STSTNetConfig(**bad)


def test_task_trains_predicts_and_uses_the_authors_adam(tmp_path):
    torch.manual_seed(0)
    task = STSTNetClassifyTask(num_classes=3, lr=1e-2)
    check_predictions(fit_then_predict(task, channels=3, size=28, tmp_path=tmp_path))
    optimizer = STSTNetClassifyTask().configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["lr"] == 5e-5 and optimizer.defaults["weight_decay"] == 1e-4
    refuses_other_data(STSTNetClassifyTask(), size=28, channels=3)


def test_experiments():
    configs = check_experiments(
        "ststnet",
        "moext.tasks.STSTNetClassifyTask",
        FLOW_BASELINE_CONFIGS,
    )
    for cfg in configs:
        model, data = cfg.model.init_args, cfg.data.init_args
        assert data.channels == ["u", "v", "strain"] and data.flow_scaling == "minmax"
        assert (data.flow_size, data.regions, data.flow_method) == (28, "none", "tvl1")
        if data.protocol != "synth-3":  # the paper's settings
            assert (model.net.image_size, model.net.stream_channels) == (28, (3, 5, 8))
            assert (model.lr, data.batch_size, cfg.trainer.max_epochs) == (5e-5, 256, 500)
        if data.flow_source == "computed" and data.protocol != "synth-3":
            assert data.image_size == 224  # flow on the full crop, then resized (P Sec. II)
    [precomputed] = [c.data.init_args for c in configs if c.data.init_args.precomputed]
    assert precomputed.flow_source == "precomputed" and precomputed.protocol == "cde3"
    assert precomputed.precomputed.channels == ("u", "v", "strain")  # the files' RGB


def test_paper_config_runs_through_loso(synth_root, monkeypatch, tmp_path):
    """`moext loso` on experiments/ststnet/cde3.yaml, shrunk to one epoch of one fold of the
    generated database: flow on the 32 x 32 crops, served at the paper's 28 x 28."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    results = loso_paper_config(CDE3, synth_overrides(size=32))
    assert results["overall"]["n"] == 6 and results["folds_missing"] == [
        "synth/sub02", "synth/sub03",
    ]  # fmt: skip


def test_precomputed_config_runs_through_loso(monkeypatch, tmp_path):
    """experiments/ststnet/cde3_precomputed.yaml on generated files in HTNet's layout (the first
    four clips of each database), one fold: served as the computed path's samples."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(tmp_path / "data"))
    write_precomputed_flow(tmp_path / "data" / "HTNet", official_rows(per_dataset=4))
    config = EXPERIMENTS / "ststnet" / "cde3_precomputed.yaml"
    small = ["--trainer.max_epochs", "1", "--trainer.accelerator", "cpu"]
    results = loso_paper_config(config, [*small, "--data.init_args.batch_size", "4"], "samm/006")
    assert results["overall"]["n"] == 4  # samm/006's four clips
    assert sorted(results["folds_missing"]) == ["casme2/sub01", "casme2/sub02", "smic/s1"]


def test_preflight_refuses_channels_the_network_does_not_take(
    synth_root, monkeypatch, tmp_path, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    wrong = [*synth_overrides(), "--data.init_args.channels", "[u, v]"]
    err = preflight_refuses(CDE3, wrong, capsys)
    assert "net.in_channels=3 but the data serves 2 channels" in err


def test_demo_config_fits_and_predicts_through_the_cli(synth_root, monkeypatch, tmp_path):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    preds = cli_fit_then_predict("ststnet", size=28, tmp_path=tmp_path)
    assert len(preds) == 6  # the generated subject's six micro clips
