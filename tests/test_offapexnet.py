"""OFF-ApexNet: two streams (u and v, no shared weights), the layer shapes and parameter count,
training and prediction through the task, and its experiment configs (their flow inputs, a LOSO
run of the paper config through the CLI, a wrong setting stopped by the preflight)."""

from __future__ import annotations

import pytest
import torch

from moext.nn.offapexnet import OffApexNet, OffApexNetConfig
from moext.tasks import OffApexNetClassifyTask
from tests.flow_baselines import (
    EXPERIMENTS,
    FLOW_BASELINE_CONFIGS,
    check_experiments,
    check_predictions,
    cli_fit_then_predict,
    fit_then_predict,
    loso_paper_config,
    preflight_refuses,
    refuses_other_data,
    synth_overrides,
)

CDE3 = EXPERIMENTS / "offapexnet" / "cde3.yaml"


def test_layer_shapes_and_parameter_count():
    """Per stream at 28 x 28: conv 5x5 (6) 28 x 28 -> pool 14 -> conv 5x5 (16) 14 -> pool 7,
    16 * 7 * 7 = 784 features; both streams 1568 -> FC 1024 -> FC 1024 -> 3.

    Parameters (depth 5: two convolutions, two FC layers, the output):
        per stream: conv 1 -> 6: 5*5*6 + 6 = 156; conv 6 -> 16: 5*5*6*16 + 16 = 2416; x 2 = 5144
        FC 1568 -> 1024: 1568*1024 + 1024 = 1 606 656
        FC 1024 -> 1024: 1024*1024 + 1024 = 1 049 600
        output 1024 -> 3: 3072 + 3 = 3075
        total 2 664 475 (the STSTNet paper's Table V gives OFF-ApexNet 2.77 M; the reimplementation
        in ECNU-Cross-Innovation-Lab/PRICAI2021-Off-TANet, models/off_apexnet.py, reports 2.66 M).
    """
    net = OffApexNet(OffApexNetConfig(), num_classes=3).eval()
    assert sum(p.numel() for p in net.parameters()) == 2_664_475
    x = torch.rand(2, 2, 28, 28)
    stream = net.streams[0]
    shapes, h = [], x[:, :1]
    for layer in stream:
        h = layer(h)
        shapes.append(tuple(h.shape[1:]))
    assert shapes == [(6, 28, 28), (6, 28, 28), (6, 14, 14), (16, 14, 14), (16, 14, 14), (16, 7, 7)]
    assert net.features(x).shape == (2, 1568) and net(x).shape == (2, 3)
    assert [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)] == [
        1024, 1024, 3,
    ]  # fmt: skip


def test_stream_one_sees_u_and_stream_two_sees_v():
    torch.manual_seed(0)
    net = OffApexNet(OffApexNetConfig.tiny(), num_classes=3).eval()
    x = torch.rand(2, 2, 28, 28)
    features = net.features(x)
    changed_v = x.clone()
    changed_v[:, 1] = torch.rand(2, 28, 28)
    moved = net.features(changed_v) != features
    assert not moved[:, :784].any() and moved[:, 784:].any()  # only the v stream's features
    assert net.streams[0][0].weight.data_ptr() != net.streams[1][0].weight.data_ptr()
    with pytest.raises(ValueError, match=r"\[u, v\]"):
        net(torch.rand(2, 3, 28, 28))
    for bad in ({"kernel_size": 4}, {"conv_channels": (6,)}, {"image_size": 3}):
        with pytest.raises(ValueError):
            OffApexNetConfig(**bad)


def test_task_trains_and_predicts(tmp_path):
    torch.manual_seed(0)
    task = OffApexNetClassifyTask(net=OffApexNetConfig.tiny(), num_classes=3, lr=1e-3)
    check_predictions(fit_then_predict(task, channels=2, size=28, tmp_path=tmp_path))
    optimizer = OffApexNetClassifyTask(net=OffApexNetConfig.tiny()).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 1e-4
    refuses_other_data(OffApexNetClassifyTask(net=OffApexNetConfig.tiny()), size=28, channels=2)


def test_experiments():
    configs = check_experiments(
        "offapexnet",
        "moext.tasks.OffApexNetClassifyTask",
        FLOW_BASELINE_CONFIGS,
    )
    for cfg in configs:
        net, data = cfg.model.init_args.net, cfg.data.init_args
        assert data.channels == ["u", "v"] and (data.flow_size, data.regions) == (28, "none")
        if data.flow_source == "computed" and data.protocol != "synth-3":
            assert data.image_size == 224  # flow on the full crop, then resized
        if data.protocol != "synth-3":
            assert (net.image_size, net.conv_channels, net.kernel_size, net.fc_features) == (
                28, (6, 16), 5, 1024,
            )  # fmt: skip


def test_demo_config_fits_and_predicts_through_the_cli(synth_root, monkeypatch, tmp_path):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    preds = cli_fit_then_predict("offapexnet", size=28, tmp_path=tmp_path)
    assert len(preds) == 6  # the generated subject's six micro clips


def test_paper_config_runs_through_loso(synth_root, monkeypatch, tmp_path):
    """`moext loso` on experiments/offapexnet/cde3.yaml, one epoch of one fold of the generated
    database: u and v of the 32 x 32 crops served at 28 x 28."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    results = loso_paper_config(CDE3, synth_overrides(size=32))
    assert results["overall"]["n"] == 6 and len(results["folds_missing"]) == 2


def test_preflight_refuses_a_third_channel(synth_root, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    wrong = [*synth_overrides(), "--data.init_args.channels", "[u, v, strain]"]
    err = preflight_refuses(CDE3, wrong, capsys)
    assert "net.in_channels=2 but the data serves 3 channels" in err
