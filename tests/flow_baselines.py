"""Helpers shared by the tests of the flow-image baselines (STSTNet, OFF-ApexNet, RCN-A, HTNet):
a synthetic flow batch, one short fit + predict with a real Trainer, the checks every experiment
config of such a method passes, a paper config's LOSO run on the generated database through the
CLI, and precomputed flow images written in the MEGC2019 baselines' distribution format."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from moext.cli import main
from moext.data.flow.precomputed import distribution_spelling, reader_spelling
from moext.data.protocols import load_official_list
from moext.experiment.config import parse_config, parse_stage
from moext.experiment.preflight import check_stages
from moext.experiment.prepare import main as prepare
from moext.experiment.settings import read_settings

EXPERIMENTS = Path(__file__).parents[1] / "experiments"
#: The classes of every 3-class protocol (cde3, casme3-3, synth-3).
THREE = ("negative", "positive", "surprise")


class FlowImages(Dataset):
    """Flow images in [0, 1] whose class shows as a bright square at a class-dependent place.

    Args:
        n: samples (labels cycle 0, 1, 2).
        channels: channels of each image.
        size: side of each image.
    """

    def __init__(self, n: int, channels: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.flow = torch.rand(n, channels, size, size, generator=g) * 0.2 + 0.4
        self.label = torch.arange(n) % 3
        side = size // 3
        for i, c in enumerate(self.label.tolist()):
            self.flow[i, :, side * c : side * (c + 1), :side] = 1.0

    def __len__(self) -> int:
        return len(self.flow)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"flow": self.flow[i], "label": self.label[i], "index": torch.tensor(i)}


def fit_then_predict(
    task: L.LightningModule, channels: int, size: int, tmp_path: Path, epochs: int = 2
) -> list[dict[str, torch.Tensor]]:
    """Train ``task`` for a few steps on :class:`FlowImages`, then predict them; checks that
    training logged a finite loss and moved every convolution and linear weight (a bias right
    before a BatchNorm gets no gradient in training mode, so it may stay)."""
    data = FlowImages(12, channels, size)
    before = {k: v.detach().clone() for k, v in task.named_parameters()}
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, DataLoader(data, batch_size=4, shuffle=True))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    unchanged = [k for k, v in task.named_parameters() if v.ndim > 1 and torch.equal(v, before[k])]
    assert not unchanged, f"weights that training did not move: {unchanged}"
    ckpt = tmp_path / "task.ckpt"
    trainer.save_checkpoint(ckpt)
    restored = type(task).load_from_checkpoint(ckpt)  # the config dataclass is allowed in it
    assert restored.net.cfg == task.net.cfg
    for k, v in task.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v), k
    return trainer.predict(task, DataLoader(data, batch_size=5))


def check_predictions(outputs: list[dict[str, torch.Tensor]], n: int = 12) -> None:
    """``predict_step`` rows: every index once, probabilities that sum to 1, pred = their argmax."""
    index = torch.cat([o["index"] for o in outputs])
    probs = torch.cat([o["probs"] for o in outputs])
    pred = torch.cat([o["pred"] for o in outputs])
    assert sorted(index.tolist()) == list(range(n)) and probs.shape == (n, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(n))
    assert torch.equal(pred, probs.argmax(1))


def refuses_other_data(task: L.LightningModule, size: int, channels: int) -> None:
    """``setup`` names the mismatch when the data serves other channels or another input kind."""
    dm = SimpleNamespace(inputs="flow", image_size=size, num_channels=channels + 1, num_classes=3)
    task._trainer = SimpleNamespace(datamodule=dm)
    with pytest.raises(ValueError, match=f"but the data serves {channels + 1} channels"):
        task.setup("fit")
    dm.num_channels, dm.inputs = channels, "pairs"
    with pytest.raises(ValueError, match="needs 'flow' inputs"):
        task.setup("fit")


def cli_fit_then_predict(method: str, size: int, tmp_path: Path) -> pd.DataFrame:
    """``moext prepare``, ``fit`` (one epoch) and ``predict`` with ``experiments/<method>/demo.yaml``
    on the generated database (``MOEXT_DATA_ROOT`` set by the caller), shrunk to ``size`` x
    ``size`` crops without landmarks; returns the predictions of the held-out subject."""
    demo = str(EXPERIMENTS / method / "demo.yaml")
    small = [
        "--data.init_args.image_size", str(size), "--data.init_args.landmarks", "none",
        "--model.init_args.net.image_size", str(size), "--data.init_args.fold", "synth/sub01",
    ]  # fmt: skip
    assert prepare(["--config", demo, "--", *small[:4]]) == 0
    fit_dir = tmp_path / "fit"
    main(
        [
            "fit", "--config", demo, *small, "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(fit_dir), "--trainer.enable_checkpointing", "true",
        ]
    )  # fmt: skip
    [ckpt] = fit_dir.rglob("*.ckpt")
    main(
        [
            "predict", "--config", demo, *small, "--ckpt_path", str(ckpt),
            "--trainer.default_root_dir", str(tmp_path / "pred"),
        ]
    )  # fmt: skip
    [written] = (tmp_path / "pred").rglob("predictions.csv")
    preds = pd.read_csv(written, dtype={"subject": str})
    assert set(preds["subject"]) == {"sub01"} and preds["pred"].isin([0, 1, 2]).all()
    return preds


#: The experiments every flow-image baseline ships: config -> (protocol, datasets).
FLOW_BASELINE_CONFIGS = {
    "cde3.yaml": ("cde3", ["casme2", "samm", "smic"]),
    "cde3_precomputed.yaml": ("cde3", ["casme2", "samm", "smic"]),
    "casme3_3class.yaml": ("casme3-3", ["casme3"]),
    "demo.yaml": ("synth-3", ["synth"]),
}


def check_experiments(method: str, class_path: str, protocols: dict[str, tuple]) -> list:
    """Every ``experiments/<method>/*.yaml`` parses, passes the LOSO preflight (model and data
    built on the meta device and checked against each other) and is the expected experiment.

    Args:
        method: the folder under ``experiments/``.
        class_path: the task every config names.
        protocols: config name -> (protocol, datasets).

    Returns:
        The parsed configs, in name order, for method-specific checks.
    """
    paths = sorted((EXPERIMENTS / method).glob("*.yaml"))
    assert {p.name for p in paths} == set(protocols)
    configs = []
    for path in paths:
        cfg = parse_config(str(path))
        model, data = cfg.model.init_args, cfg.data.init_args
        assert cfg.model.class_path == class_path and model.num_classes == 3
        assert cfg.data.class_path == "moext.data.FlowDataModule" and data.task == "classify"
        assert (data.protocol, data.datasets) == protocols[path.name]
        assert model.net.image_size == (data.flow_size or data.image_size)  # the served size
        settings = read_settings(path)
        assert settings.pretrain_config is None and settings.name == f"{method}_{path.stem}"
        check_stages(parse_stage(path), None, THREE)
        configs.append(cfg)
    return configs


# ------------------------------------------------------------------ LOSO on the generated database
def synth_overrides(size: int = 32, landmarks: str = "none", epochs: int = 1) -> list[str]:
    """Overrides that turn a paper config into a one-epoch run on the generated database:
    protocol ``synth-3``, ``size`` x ``size`` crops, one CPU, small batches."""
    return [
        "--data.init_args.protocol", "synth-3", "--data.init_args.datasets", "[synth]",
        "--data.init_args.image_size", str(size), "--data.init_args.landmarks", landmarks,
        "--data.init_args.batch_size", "8", "--trainer.max_epochs", str(epochs),
        "--trainer.accelerator", "cpu", "--trainer.log_every_n_steps", "1",
    ]  # fmt: skip


def loso_paper_config(config: Path, overrides: list[str], fold: str = "synth/sub01") -> dict:
    """``moext loso --config <config> --folds <fold> -- <overrides>`` (run from the test's
    folder: ``runs/`` lands there); returns its ``results.json``."""
    assert main(["loso", "--config", str(config), "--folds", fold, "--", *overrides]) == 0
    [results] = Path("runs").glob("*/results.json")
    return json.loads(results.read_text())


def preflight_refuses(config: Path, overrides: list[str], capsys) -> str:
    """``moext loso`` with a wrong setting stops before anything trains or is written: exit code
    2, one line on stderr (returned), no run folder."""
    assert main(["loso", "--config", str(config), "--", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not Path("runs").exists()
    return err


# ------------------------------------------------------------------ precomputed flow images
#: HTNet's copy of the STSTNet images (github.com/wangzhifengharrison/HTNet): its folder, the
#: files' names (a space before ``.png``) and its samples list with its columns.
HTNET_FOLDER = "datasets/STSNet_whole_norm_u_v_os"
HTNET_PATTERN = "{subject}_{clip} .png"
HTNET_LIST = "combined_3_class2_for_optical_flow.csv"
HTNET_COLUMNS = ["dataset", "sub", "filename_o", "label", "apex", "imagename", "sub_filename"]
#: STSTNet's per-subject folders (``norm_u_v_os``; HTNet's ``datasets/three_norm_u_v_os``).
STSTNET_FOLDER = "norm_u_v_os"
STSTNET_PATTERN = "{subject}/u_test/{label}/{subject}_{clip}.png"


def official_rows(per_dataset: int | None = None) -> list[tuple[str, str, str, int]]:
    """The package's MEGC2019 list as the distribution spells it (dataset, subject, clip,
    label): all of it, or the first ``per_dataset`` clips of each database."""
    rows, seen = [], {}
    for e in load_official_list():
        subject, clip = distribution_spelling(e.dataset, e.subject, e.filename)
        seen[e.dataset] = seen.get(e.dataset, 0) + 1
        if per_dataset is None or seen[e.dataset] <= per_dataset:
            rows.append((e.dataset, subject, clip, e.label))
    return rows


def flow_png(label: int, seed: int, size: int = 28) -> np.ndarray:
    """(size, size, 3) uint8 RGB (u, v, strain), each channel spanning 0..255 as the authors'
    files do, with the class visible: a bright square in a class-dependent third of the image."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 0.3, (size, size, 3))
    third = size // 3
    image[third * label : third * (label + 1), :third] = 1.0
    lo, hi = image.min(axis=(0, 1)), image.max(axis=(0, 1))
    return np.rint(255 * (image - lo) / (hi - lo)).astype(np.uint8)


def write_precomputed_flow(
    root: Path, rows: list[tuple[str, str, str, int]], layout: str = "htnet", size: int = 28
) -> Path:
    """Write generated flow images in the layout the MEGC2019 baselines' authors distribute
    (never real data).

    Args:
        root: the data root.
        rows: (dataset, subject, clip, label) spelt as the distribution spells them.
        layout: ``htnet``: ``root/datasets/STSNet_whole_norm_u_v_os/<subject>_<clip> .png`` and
            ``root/combined_3_class2_for_optical_flow.csv`` with HTNet's columns; ``ststnet``:
            ``root/norm_u_v_os/<subject>/u_test/<label>/<subject>_<clip>.png`` for a subject's
            own samples and ``u_train/<label>/`` copies of every other subject's.
        size: the images' side.

    Returns:
        The images' folder.
    """
    images = {
        (d, s, c): flow_png(label, seed=i, size=size) for i, (d, s, c, label) in enumerate(rows)
    }
    if layout == "htnet":
        folder = root / HTNET_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        with open(root / HTNET_LIST, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(HTNET_COLUMNS)
            for d, s, c, label in rows:
                face = f"{s}_{reader_spelling(d, s, c)[1]}.jpg"  # s01_s1_ne_01.jpg
                writer.writerow([d, s, c, label, "", face, ""])
        for (_, s, c), image in images.items():
            cv2.imwrite(str(folder / HTNET_PATTERN.format(subject=s, clip=c)), image[..., ::-1])
        return folder
    folder = root / STSTNET_FOLDER
    for subject in {s for _, s, _, _ in rows}:
        for d, s, c, label in rows:
            part = "u_test" if s == subject else "u_train"
            path = folder / subject / part / str(label) / f"{s}_{c}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), images[(d, s, c)][..., ::-1])
    return folder
