"""RCN-A: the authors' layer shapes and parameter count, the parameter-free attention unit
against a transcription of the authors' code, the recurrent layer's shared weights, training and
prediction through the task with the code's SGD, and the experiment configs (their flow inputs,
a LOSO run of the paper config through the CLI, a wrong setting stopped by the preflight)."""

from __future__ import annotations

import pytest
import torch

from moext.nn.rcn import RCN, RCNConfig, class_attention
from moext.tasks import RCNClassifyTask
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

CDE3 = EXPERIMENTS / "rcn" / "cde3.yaml"


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_layer_shapes_and_parameter_count_are_the_code_s():
    """MeNets.py RCN_A with ModelTrain_Final.py's defaults (3 inputs, F = 64, P = 7, one RCL)
    at 60 x 60: stem conv 5x5 56 -> pool 28; RCL 28 -> pool 14; adaptive pool 7; 64 * 7 * 7.

    Parameters:
        stem conv 5x5, 3 -> 64: 5*5*3*64 + 64 = 4864;  BatchNorm 2*64 = 128          (4992)
        RCL feed-forward 1x1, 64 -> 64: 4096 + 64 = 4160;  BatchNorm 128              (4288)
        RCL recurrent 3x3, 64 -> 64: 36864 + 64 = 36928;  BatchNorm 128, shared by
            both recurrent steps                                                      (37056)
        classifier 3136 -> 3: 9408 + 3 = 9411
        attention unit: none (it reuses the classifier's weights)
        total 4992 + 4288 + 37056 + 9411 = 55 747
    The README's example run (F = 32, P = 5): 2496 + 1120 + 9312 + 2403 = 15 331.
    """
    net = RCN(RCNConfig(), num_classes=3).eval()
    assert n_params(net) == 55_747
    assert n_params(RCN(RCNConfig(attention=False), 3)) == 55_747  # parameter-free attention
    assert n_params(RCN(RCNConfig(recurrent_steps=5), 3)) == 55_747  # one shared recurrent unit
    assert n_params(RCN(RCNConfig(feature_maps=32, pool_size=5), 3)) == 15_331
    x = torch.rand(2, 3, 60, 60)
    stem = net.stem(x)
    rcl = net.rcls(stem)
    assert stem.shape == (2, 64, 28, 28) and rcl.shape == (2, 64, 14, 14)
    assert net.pool(rcl).shape == (2, 64, 7, 7) and net(x).shape == (2, 3)


def code_attention(features: torch.Tensor, weight: torch.Tensor, classes: int) -> torch.Tensor:
    """A straight transcription of the authors' SpatialAttentionBlock_P.forward (MeNets.py):
    per class, the classifier row reshaped to (C, P, P) times the features, mean over channels,
    min subtracted and divided by the max per sample; the classes' maps averaged."""
    maps = []
    for k in range(classes):
        w = weight[k].reshape(features.shape[1], features.shape[2], features.shape[3])
        cam = (w * features).mean(dim=1, keepdim=True)
        cam = cam - torch.min(torch.min(cam, 3, True)[0], 2, True)[0]
        cam = cam / torch.max(torch.max(cam, 3, True)[0], 2, True)[0]
        maps.append(cam)
    return torch.cat(maps, dim=1).mean(dim=1, keepdim=True)


def test_attention_unit_matches_the_authors_code():
    torch.manual_seed(0)
    features, weight = torch.rand(4, 8, 5, 5), torch.randn(3, 8 * 5 * 5)
    got = class_attention(features, weight)
    torch.testing.assert_close(got, code_attention(features, weight, 3))
    assert got.shape == (4, 1, 5, 5) and got.min() >= 0 and got.max() <= 1
    # a constant map: 0 (the code: 0 / 0 = NaN)
    flat = class_attention(torch.ones(1, 8, 5, 5), torch.ones(3, 200))
    assert torch.equal(flat, torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="does not fit"):
        class_attention(features, torch.randn(3, 10))


def test_forward_is_the_code_s_rcn_a_and_attention_false_the_plain_rcn():
    """RCN_A.forward, model_version 3: the attention map comes from the stem's output pooled to
    P x P and the classifier's weight, and multiplies the pooled recurrent features."""
    torch.manual_seed(0)
    net = RCN(RCNConfig.tiny(), num_classes=3).eval()
    x = torch.rand(2, 3, 60, 60)
    with torch.no_grad():
        stem = net.stem(x)
        pooled = net.pool(net.rcls(stem))
        y = code_attention(net.pool(stem), net.classifier.weight, 3)
        torch.testing.assert_close(net(x), net.classifier((pooled * y).flatten(1)))
        net.cfg.attention = False
        torch.testing.assert_close(net(x), net.classifier(pooled.flatten(1)))
    net.cfg.attention = True
    net(x).sum().backward()  # the classifier's weight also gets gradient through the map
    assert net.classifier.weight.grad.abs().sum() > 0


def test_recurrent_layer_reuses_one_unit():
    torch.manual_seed(0)
    layer = RCN(RCNConfig.tiny(), num_classes=3).rcls[0].eval()
    calls = []
    layer.recurrent.register_forward_hook(lambda m, i, o: calls.append(1))
    x = torch.rand(2, 8, 12, 12)
    with torch.no_grad():
        out = layer(x)
        y = layer.feedforward(x)
        for _ in range(2):
            y = layer.recurrent(x + y)
    assert len(calls) == 4  # 2 steps in the layer, 2 in the check
    torch.testing.assert_close(out, layer.downsample(y))
    for bad in ({"image_size": 7}, {"recurrent_steps": 0}, {"dropout": 1.0}):
        with pytest.raises(ValueError):
            RCNConfig(**bad)


def test_task_trains_with_the_code_s_sgd_and_predicts(tmp_path):
    torch.manual_seed(0)
    task = RCNClassifyTask(net=RCNConfig.tiny(image_size=28), num_classes=3, lr=1e-2)
    check_predictions(fit_then_predict(task, channels=3, size=28, tmp_path=tmp_path))
    optimizer = RCNClassifyTask(net=RCNConfig.tiny()).configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)  # constant: the code never steps its StepLR
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"]) == (5e-4, 0.9)
    refuses_other_data(RCNClassifyTask(net=RCNConfig.tiny()), size=60, channels=3)
    with pytest.raises(ValueError, match="momentum"):
        RCNClassifyTask(momentum=1.0)


def test_experiments():
    configs = check_experiments(
        "rcn",
        "moext.tasks.RCNClassifyTask",
        FLOW_BASELINE_CONFIGS,
    )
    for cfg in configs:
        model, data = cfg.model.init_args, cfg.data.init_args
        assert model.net.attention and data.channels == ["u", "v", "strain"]
        if data.protocol == "synth-3":
            continue
        assert (model.lr, cfg.trainer.max_epochs) == (5e-4, 100)
        if data.flow_source == "computed":  # the code's defaults at the inferred 60 x 60
            assert (model.net.feature_maps, model.net.pool_size, data.batch_size) == (64, 7, 64)
            assert (data.image_size, data.flow_size) == (224, 60)
        else:  # the 28 x 28 files: the README's example network
            assert (model.net.feature_maps, model.net.pool_size, data.flow_size) == (32, 5, 28)


def test_demo_config_fits_and_predicts_through_the_cli(synth_root, monkeypatch, tmp_path):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    preds = cli_fit_then_predict("rcn", size=28, tmp_path=tmp_path)
    assert len(preds) == 6  # the generated subject's six micro clips


def test_paper_config_runs_through_loso(synth_root, monkeypatch, tmp_path):
    """`moext loso` on experiments/rcn/cde3.yaml, one epoch of one fold of the generated
    database: flow of the 64 x 64 crops served at 60 x 60."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    results = loso_paper_config(CDE3, synth_overrides(size=64))
    assert results["overall"]["n"] == 6 and len(results["folds_missing"]) == 2


def test_preflight_refuses_a_flow_size_the_network_was_not_built_for(
    synth_root, monkeypatch, tmp_path, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    wrong = [*synth_overrides(size=64), "--data.init_args.flow_size", "32"]
    err = preflight_refuses(CDE3, wrong, capsys)
    assert "net.image_size=60 but data.init_args.flow_size=32" in err
