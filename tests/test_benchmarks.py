"""The benchmark scripts run end to end on tiny settings on the CPU, so their code paths never rot.

What runs here: every script's ``main`` (input path with a worker process; training steps eager
and compiled, fp32 and bf16 autocast, contiguous and channels_last, the FLOP counter, the MFU,
the batch sweep; LOSO wall clock in demo mode and CDE-sized mode with its pretraining stage,
busy-share profiling, the repeated fold and its extrapolation; the fold stack's three ways and
its stack-vs-sequential check). The GPU-only branches (CUDA events, peak lookup by device name,
stopping a sweep at an OOM, CUDA kernel intervals for the busy share) are exercised through
their CPU fallbacks (CPU ops stand in for kernels), the peak table, and an injected
out-of-memory error.

``torch.compile`` is tested with the ``aot_eager`` backend: Dynamo capture and AOTAutograd run
as on a GPU, but inductor's C++ code generation is skipped, because it alone takes about a
minute for the tiny network on a 2-core CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import fold_stack, input_path, loso_wallclock, train_step
from benchmarks.common import Column, DeviceTimer, covered_length, machine_info, markdown_table
from moext.nn.moext import MoExtConfig

TINY_STEPS = ["--tiny", "--device", "cpu", "--batch-size", "4", "--warmup", "1", "--steps", "1"]


def test_input_path_tiny(tmp_path):
    out = input_path.main(
        [
            "--pairs", "8", "--batch-size", "4", "--size", "64", "--batches", "2", "--warmup", "1",
            "--workers", "1", "--breakdown", "1", "--json", str(tmp_path / "input.json"),
        ]
    )  # fmt: skip
    assert [r["path"] for r in out["rows"]] == [
        "naive",
        "package: device_cache + augment device",
        "package: DataLoader + augment device",
        "package: DataLoader + augment cpu",
        "package: device_cache + augment static",
        "package: device_cache + augment none (upper bound)",
    ]
    assert out["static_expansion_s"] > 0 and out["static_amortised"]["epochs"] == 30
    assert out["pairs"] == 9  # rounded up to fill the one subject evenly
    assert all(r["pairs_per_s"] > 0 and r["batches"] == 2 for r in out["rows"])
    assert out["rows"][0]["speedup"] == pytest.approx(1.0)
    assert out["load_s"] > 0 and out["prepare_s"] > 0
    assert set(out["package_ms_per_batch_by_stage"]) >= {"augment_pairs", "grid_sample"}
    assert json.loads((tmp_path / "input.json").read_text())["speedup"] == out["speedup"]


def test_every_path_delivers_float_pairs_of_the_model_size(tmp_path):
    from types import SimpleNamespace

    from moext.data.pairs.cache import PrepareSettings, pair_paths

    input_path.build_database(tmp_path / "synth", 3, frame_size=48)
    a = SimpleNamespace(size=32, batch_size=2, expansion=1, seed=0)
    cpu = torch.device("cpu")
    dm = input_path.package_datamodule(tmp_path, a, cpu, augment="device", device_cache=True)
    dm.prepare_data()
    dm.setup("fit")
    batch = input_path.deliver_with(dm, cpu)(next(iter(dm.train_dataloader())))
    assert batch["onset"].shape == (2, 3, 32, 32) and batch["onset"].dtype == torch.float32
    settings = PrepareSettings(size=32, backend="none")
    naive = input_path.NaivePairs([pair_paths(s, settings) for s in dm.samples], 32)[0]
    assert naive["onset"].shape == (3, 32, 32) and naive["onset"].dtype == torch.float32
    assert 0 <= naive["onset"].min() <= naive["onset"].max() <= 1


def test_train_step_eager_variants_flops_mfu_and_sweep(tmp_path):
    out = train_step.main(
        [
            *TINY_STEPS, "--compile", "off", "--precision", "both", "--channels-last", "both",
            "--sweep-batch", "2", "--peak-tflops", "1", "--json", str(tmp_path / "steps.json"),
        ]
    )  # fmt: skip
    rows = out["rows"]
    assert len(rows) == 2 * 2 * 2  # task x precision x channels_last
    assert {(r["task"], r["precision"], r["channels_last"]) for r in rows} == {
        (t, p, c) for t in ("pretrain", "classify") for p in ("fp32", "bf16") for c in (False, True)
    }
    for r in rows:
        assert "error" not in r
        assert r["samples_per_s"] > 0 and r["gflop_per_step"] > 0
        assert r["mfu"] == pytest.approx(r["achieved_tflops"] / 1.0)
    pre = next(r for r in rows if r["task"] == "pretrain")
    cls = next(r for r in rows if r["task"] == "classify")
    assert pre["gflop_per_step"] > cls["gflop_per_step"]  # 2m views + decoder vs 2 images
    assert [r["batch_size"] for r in out["sweep"]] == [2, 2]
    assert set(out["best"]) == {"pretrain", "classify"}
    assert json.loads((tmp_path / "steps.json").read_text())["best"].keys() == out["best"].keys()


@pytest.mark.parametrize("scope", ["package", "step"])
def test_train_step_compiled_bf16_channels_last(scope):
    out = train_step.main(
        [*TINY_STEPS, "--compile", "on", "--compile-scope", scope, "--compile-backend", "aot_eager",
         "--precision", "bf16", "--channels-last", "on", "--no-flops"]
    )  # fmt: skip
    assert [(r["compile"], r["compile_scope"]) for r in out["rows"]] == [(True, scope)] * 2
    assert all("error" not in r and r["samples_per_s"] > 0 for r in out["rows"])
    assert all("mfu" not in r for r in out["rows"])
    assert torch.compile.__name__ == "compile"  # the backend override was undone


def test_flop_count_includes_the_backward_pass():
    # Backward costs about twice the forward (less for the first layer's unneeded input grad).
    from torch.utils.flop_counter import FlopCounterMode

    cfg = MoExtConfig.tiny()
    cpu = torch.device("cpu")
    module = train_step.build_task("classify", cfg, views=3)
    batch = train_step.make_batch(2, cfg.image_size, cpu)
    with FlopCounterMode(display=False) as forward:
        train_step.training_step(module)(batch)
    total = train_step.count_flops("classify", cfg, views=3, batch_size=2, device=cpu)
    assert 2 * forward.get_total_flops() < total <= 3 * forward.get_total_flops()


def test_sweep_stops_at_the_first_out_of_memory(monkeypatch):
    real = train_step.run_variant

    def fake(v, *args, **kwargs):
        if v.batch_size >= 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real(v, *args, **kwargs)

    monkeypatch.setattr(train_step, "run_variant", fake)
    out = train_step.main(
        [*TINY_STEPS, "--task", "classify", "--compile", "off", "--precision", "fp32",
         "--channels-last", "off", "--sweep-batch", "2,8,16", "--no-flops"]
    )  # fmt: skip
    assert [(r["batch_size"], r.get("error")) for r in out["sweep"]] == [(2, None), (8, "OOM")]


@pytest.mark.parametrize(
    "name, precision, expected",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
        ("NVIDIA H100 80GB HBM3", "fp32", 494.7),  # TF32 tensor cores
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H200", "bf16", 989.4),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("Some Future GPU", "bf16", None),
    ],
)
def test_peak_table(name, precision, expected):
    assert train_step.peak_tflops(name, precision) == expected


def test_loso_demo_mode_times_every_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(tmp_path))  # restored after the test
    out = loso_wallclock.main(
        [
            "--subjects", "2", "--epochs", "1", "--landmarks", "none", "--wandb", "disabled",
            "--work", str(tmp_path / "work"), "--json", str(tmp_path / "loso.json"),
        ]
    )  # fmt: skip
    loso = out["loso"]
    assert loso["n_folds_total"] == loso["n_folds_measured"] == 2
    for stage in [loso["pretrain"], *loso["folds"]]:
        assert stage["epochs"] == 1 and stage["steps"] > 0
        assert 0 < stage["steps_s"] < stage["wall_s"]
        assert 0 < stage["outside_steps_fraction"] < 1
    assert (tmp_path / "work" / "runs" / "moext_demo" / "results.json").is_file()
    assert json.loads((tmp_path / "loso.json").read_text())["summary"] == out["summary"]


def test_loso_cde_sized_mode_is_labelled_as_an_extrapolation(tmp_path):
    out = loso_wallclock.main(
        [
            "--cde-sized", "--samples", "12", "--cde-subjects", "3", "--folds", "1", "--epochs", "2",
            "--size", "64", "--backbone", "tiny-16", "--expansion", "1", "--batch-size", "4",
            "--accelerator", "cpu", "--precision", "bf16-mixed", "--device-cache", "--channels-last",
            "--work", str(tmp_path), "--pretrain-epochs", "1", "--busy-steps", "2",
            "--busy-start", "1", "--repeat-first-fold", "--signal", "0.3",
        ]
    )  # fmt: skip
    assert out["config"]["data"]["init_args"]["device_cache"] is True
    assert out["config"]["model"]["init_args"]["channels_last"] is True
    x = out["extrapolation"]
    assert x["label"].startswith("EXTRAPOLATED from 1 measured fold(s) x 2 epoch(s)")
    assert x["folds"] == 3 and x["epochs"] == 30
    fold = out["loso"]["folds"][0]
    assert fold["epochs"] == 2
    expected = (
        fold["outside_epochs_s"] + fold["predict_s"] + fold["epoch_s"][0] + 29 * fold["epoch_s"][1]
    )
    assert x["per_fold_s"] == pytest.approx(expected)
    assert x["total_s"] == pytest.approx(3 * expected)
    # the experiment's pretraining stage ran first on the same synthetic pairs, and was timed
    pre = out["loso"]["pretrain"]
    assert pre["epochs"] == 1 and pre["steps"] == 3
    assert (tmp_path / "cde_sized_pretrain.yaml").is_file()
    # busy share over 2 profiled steps of each stage (CPU ops stand in for kernels here)
    for stage in (pre, fold):
        assert stage["busy"]["steps"] == 2 and 0 < stage["busy_share"] <= 1
        assert stage["busy"]["window_s"] >= stage["busy"]["busy_s"] > 0
    assert fold["busy"]["first_step"] == 1
    # the first fold twice with one seed: identical on a CPU
    d = out["loso"]["determinism"]
    assert d["fold"] == "synth/s01" and d["samples"] == 4 and d["identical"]
    assert out["summary"]["pooled_measured_folds"]["n"] == 4


def test_cde_sized_data_follows_the_megc2019_composition():
    dm = loso_wallclock.SyntheticCDE()
    samples, labels, classes = dm.read_samples()
    assert len(samples) == 442 and len(dm.subjects()) == 68
    per_db = {d: sum(s.dataset == d for s in samples) for d in ("smic", "casme2", "samm")}
    assert per_db == {"smic": 164, "casme2": 145, "samm": 133}
    assert [labels.count(c) for c in range(3)] == [250, 109, 83]
    assert classes == ("negative", "positive", "surprise")
    small = loso_wallclock.SyntheticCDE(samples=12, subjects=3, fold="synth/s02", image_size=32)
    small.setup("fit")
    assert small._pairs.shape == (12, 2, 3, 32, 32) and small._pairs.dtype == torch.uint8
    assert len(small.test_index) == 4 and len(small.train_index) == 8
    # with a signal, the apex brightens one patch per class: top, middle, bottom third
    marked = loso_wallclock.SyntheticCDE(samples=6, subjects=2, image_size=36, signal=0.5)
    marked.setup("fit")
    centre = marked._pairs[..., 18].float()  # (N, 2, 3, H): the centre column
    diff = (centre[:, 1] - centre[:, 0]).mean(dim=1)  # (N, H)
    for i, label in enumerate(marked.labels):
        bright_rows = (diff[i] > 20).nonzero().flatten()
        assert len(bright_rows) == 6 and set((bright_rows // 12).tolist()) == {label}


def test_common_helpers():
    timer = DeviceTimer(torch.device("cpu"))
    timer.start()
    assert timer.stop() >= 0
    table = markdown_table([{"a": 1.234}, {}], [Column("a", "A", "{:.1f}")])
    assert table.splitlines() == ["| A |", "|---|", "| 1.2 |", "| - |"]
    info = machine_info(torch.device("cpu"))
    assert info["usable_cpus"] >= 1 and info["gpu"] is None
    assert covered_length([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == 4  # overlaps, nesting
    assert covered_length([]) == 0


def test_fold_stack_ways_and_the_stack_trains_each_fold_as_alone(tmp_path):
    threads = torch.get_num_threads()
    try:  # one thread: a few ms per tiny step instead of OpenMP spinning on a busy machine
        out = fold_stack.main(
            [
                "--tiny", "--size", "32", "--folds", "2", "--batch-size", "2", "--warmup", "1",
                "--steps", "2", "--device", "cpu", "--check", "2", "--start-method", "fork",
                "--threads", "1", "--json", str(tmp_path / "stack.json"),
            ]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert [r["way"] for r in out["rows"]] == ["sequential", "vmap stack", "processes"]
    assert all(r["folds"] == 2 and r["fold_steps_per_s"] > 0 for r in out["rows"])
    assert out["rows"][0]["speedup"] == pytest.approx(1.0)
    # vmap + functional_call with stacked buffers: fold i's gradients, losses and BatchNorm
    # running statistics are those of fold i trained alone (to float rounding)
    check = out["check"]
    assert check["max_grad_diff_relative"] < 1e-4 and check["max_loss_diff"] < 1e-3
    assert check["max_buffer_diff"] < 1e-4
    assert json.loads((tmp_path / "stack.json").read_text())["check"] == check
    # ... and the running statistics did move, separately per fold
    cfg, cpu = MoExtConfig.tiny(32), torch.device("cpu")
    stack = fold_stack.VmapStack(fold_stack.make_models(cfg, 2, cpu, dropout=0.0))
    stack.step(fold_stack.make_batches(2, 2, 32, cpu))
    means = {n: b for n, b in stack.buffers.items() if n.endswith("running_mean")}
    assert means and all(b.abs().sum() > 0 for b in means.values())
    assert not torch.equal(*next(iter(means.values())))  # two folds, two batches, two means
    tracked = [b for n, b in stack.buffers.items() if n.endswith("num_batches_tracked")]
    # one count per forward pass: 2 where the separator sees onset and apex, 1 after it
    assert {tuple(b.tolist()) for b in tracked} == {(2, 2), (1, 1)}


def test_loso_config_only_writes_both_stages_for_moext_loso(tmp_path):
    from moext.experiment.settings import read_settings

    out = loso_wallclock.main(
        ["--cde-sized", "--config-only", "--work", str(tmp_path), "--pretrain-epochs", "2",
         "--epochs", "30", "--signal", "0.03", "--compile"]
    )  # fmt: skip
    settings = read_settings(out["config"])
    assert settings.pretrain_config == str(tmp_path / "cde_sized_pretrain.yaml")
    config = yaml.safe_load(Path(out["config"]).read_text())
    pretrain = yaml.safe_load(Path(settings.pretrain_config).read_text())
    assert (config["trainer"]["max_epochs"], pretrain["trainer"]["max_epochs"]) == (30, 2)
    assert config["data"]["init_args"]["signal"] == 0.03
    assert pretrain["data"]["init_args"]["task"] == "pretrain"
    assert config["model"]["init_args"]["compile"] and pretrain["model"]["init_args"]["compile"]
    assert pretrain["model"]["init_args"]["net"]["pretrained_backbone"] is False  # no download
    assert not (tmp_path / "runs").exists()  # nothing trained
