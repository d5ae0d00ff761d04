"""Faults of a hostile run (issue 14): each must end in a clear message naming the file or
setting, or in a recovery, with nothing lost. Run folders, guards, signals, preflight, umask."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from moext.experiment import loso
from moext.experiment.config import parse_stage
from moext.experiment.definition import open_experiment
from moext.experiment.guards import FiniteGuard, TrainingDiverged
from moext.experiment.preflight import StageConfigError, check_stages
from moext.experiment.processes import Interrupted, stop_on_signals
from moext.experiment.results import (
    FoldCheckError,
    pool_run,
    record_digest,
    verify_fold,
    write_fold,
)
from moext.experiment.run_folder import check_experiment
from moext.io import atomic_write, atomic_write_text
from tests.conftest import CONF


def make_experiment(root: Path, tmp_path: Path, pretrain: bool = True) -> tuple[Path, Path]:
    """The tests' tiny experiment (tests/conf/classify.yaml) writing under tmp_path; without
    ``pretrain`` its classifier trains from scratch (no pretraining stage, faster)."""
    text = (CONF / "classify.yaml").read_text()
    text = text.replace("out_dir: runs", f"out_dir: {tmp_path / 'runs'}")
    text = text.replace("net: net.yaml", f"net: {CONF / 'net.yaml'}")
    if not pretrain:
        text = text.replace("  pretrain_config: tests/conf/pretrain.yaml\n", "")
    cfg = tmp_path / ("exp.yaml" if pretrain else "scratch.yaml")
    cfg.write_text(text)
    return cfg, tmp_path / "runs" / "test_loso"


@pytest.fixture
def data_env(synth_root, monkeypatch):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    monkeypatch.setenv("WANDB_MODE", "disabled")  # faster; W&B itself is tested in test_loso
    monkeypatch.chdir(CONF.parent.parent)  # configs name each other relative to the repo
    return synth_root


# --- fault 3 / 4: what a fold folder holds is verified before it is trusted ---------------


def _row(sample: str, fold: str, label: int = 0) -> dict:
    dataset, subject, _ = sample.split("/")
    return {"sample": sample, "dataset": dataset, "subject": subject, "fold": fold,
            "label": label, "pred": label, "prob_a": 0.75, "prob_b": 0.25}  # fmt: skip


def _run_folder(tmp_path: Path, fingerprint: str = "cfgA") -> Path:
    """A run folder of two finished folds of 2 samples each, recorded as a run would."""
    held_out = {
        "synth/sub01": ["synth/sub01/a", "synth/sub01/b"],
        "synth/sub02": ["synth/sub02/a", "synth/sub02/b"],
    }
    record = check_experiment(
        tmp_path, {"classify": {"x": 1}}, list(held_out), ("a", "b"), held_out
    )
    record["fingerprint"] = fingerprint
    record["record_digest"] = record_digest(record)  # sealed, as the run seals it
    (tmp_path / "experiment.json").write_text(json.dumps(record))
    for fold, ids in held_out.items():
        rows = [_row(s, fold, i) for i, s in enumerate(ids)]
        fold_record = {"fold": fold, "experiment": fingerprint, "held_out": ids}
        fold_record["record_digest"] = record["record_digest"]
        write_fold(tmp_path / "folds" / fold.replace("/", "__"), rows, ("a", "b"), fold_record)
    return tmp_path


def _delete_row(p: Path) -> None:
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:-1]))


def _cut(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-7])


def _empty(p: Path) -> None:
    p.write_text("")


def _move_row_to_other_subject(p: Path) -> None:  # subject + fold changed together
    p.write_text(p.read_text().replace("synth,sub02,synth/sub02,1", "synth,sub01,synth/sub01,1"))


def _edit_prediction(p: Path) -> None:
    p.write_text(p.read_text().replace("0.75", "0.15"))


def _no_record(p: Path) -> None:  # a fold folder written before folds carried records
    (p.parent / "fold.json").unlink()


def _copied_from_other_configuration(p: Path) -> None:
    other = _run_folder(p.parents[3] / "other", fingerprint="cfgB")
    shutil.rmtree(p.parent)
    shutil.copytree(other / "folds" / "synth__sub02", p.parent)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_delete_row, r"fold synth/sub02: .* \(1 rows for the 2 held-out samples; missing \['synth/sub02/b'\]"),
        (_cut, r"fold synth/sub02: .*predictions.csv changed .*last line is cut"),
        (_empty, r"synth__sub02/predictions.csv: empty file"),
        (_move_row_to_other_subject, r"fold synth/sub02: .*changed after the fold wrote it"),
        (_edit_prediction, r"fold synth/sub02: .*rows were edited"),
        (_no_record, r"synth__sub02/predictions.csv: no fold.json beside it"),
        (_copied_from_other_configuration, r"fold synth/sub02 .*made by configuration cfgB"),
    ],
)  # fmt: skip
def test_pooling_refuses_a_fold_that_does_not_prove_what_it_holds(tmp_path, damage, message):
    run_dir = _run_folder(tmp_path / "run")
    assert pool_run(run_dir)["overall"]["n"] == 4  # intact: pooled
    damage(run_dir / "folds" / "synth__sub02" / "predictions.csv")
    with pytest.raises(FoldCheckError, match=message) as err:
        pool_run(run_dir)
    assert "delete" in str(err.value)  # and says how to recover


def test_a_fold_must_cover_the_held_out_samples_the_experiment_records(tmp_path):
    run_dir = _run_folder(tmp_path)
    record = json.loads((run_dir / "experiment.json").read_text())
    record["fold_samples"]["synth/sub01"]["n"] = 3  # the data had 3 samples for this fold
    with pytest.raises(FoldCheckError, match=r"fold synth/sub01: must cover the 3 held-out"):
        verify_fold(run_dir / "folds" / "synth__sub01", record)


def test_without_experiment_json_a_folder_is_adopted_only_from_matching_outputs(tmp_path, capsys):
    """Fault 4: experiment.json deleted. Outputs of this configuration: recorded again; of
    another one (or of none): refused, naming them; nothing is rewritten."""
    settings = {"classify": {"trainer.max_epochs": 1}}
    folds, classes = ["synth/sub01", "synth/sub02"], ("a", "b")
    first = check_experiment(tmp_path, settings, folds, classes)
    row = _row("synth/sub01/a", "synth/sub01")
    write_fold(tmp_path / "folds" / "synth__sub01", [row], classes,
               {"fold": "synth/sub01", "experiment": first["fingerprint"], "held_out": ["synth/sub01/a"]})  # fmt: skip
    (tmp_path / "experiment.json").unlink()
    other = {"classify": {"trainer.max_epochs": 2}}
    with pytest.raises(
        ValueError, match=r"(?s)no experiment.json.*folds/synth__sub01/predictions.csv"
    ):
        check_experiment(tmp_path, other, folds, classes)
    assert not (tmp_path / "experiment.json").exists()
    check_experiment(tmp_path, settings, folds, classes)  # the same configuration: recorded again
    assert "recorded it again" in capsys.readouterr().out
    assert (
        json.loads((tmp_path / "experiment.json").read_text())["fingerprint"]
        == first["fingerprint"]
    )
    (tmp_path / "experiment.json").unlink()
    (tmp_path / "folds" / "synth__sub01" / "fold.json").unlink()  # an old folder: no record
    with pytest.raises(ValueError, match="no record of its configuration"):
        check_experiment(tmp_path, settings, folds, classes)


# --- fault 1: a diverging stage stops loudly ------------------------------------------------


def test_the_guard_names_stage_fold_epoch_and_step():
    one_process = SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)
    trainer = SimpleNamespace(current_epoch=3, global_step=17, strategy=one_process)
    guard = FiniteGuard("classify", "synth/sub02")
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.5)}, None, 0)  # finite: fine
    with pytest.raises(
        TrainingDiverged,
        match=r"classify stage of fold synth/sub02 diverged at epoch 3, global step 17: the training loss is nan",
    ):
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("nan"))}, None, 4)  # fmt: skip
    probs = torch.tensor([[0.5, 0.5], [float("nan"), float("nan")]])
    with pytest.raises(TrainingDiverged, match=r"the prediction 'probs' holds nan"):
        guard.on_predict_batch_end(
            trainer, None, {"index": torch.arange(2), "probs": probs}, None, 0
        )
    module = torch.nn.Linear(2, 2)
    module.weight.data[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"parameter weight is not finite"):
        FiniteGuard("pretrain").on_train_epoch_end(trainer, module)


def test_the_guard_stops_every_ddp_rank_when_one_rank_diverges():
    """Under DDP the decision is reduced over the ranks (any): a rank whose own values are finite
    stops too, instead of waiting in the next collective for the rank that raised."""

    class OtherRankFoundNaN:  # the reduction as DDPStrategy does it, another rank voting True
        def __init__(self) -> None:
            self.calls: list[tuple[bool, bool]] = []

        def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
            self.calls.append((decision, all))
            return True if not all else decision

    strategy = OtherRankFoundNaN()
    trainer = SimpleNamespace(current_epoch=0, global_step=5, strategy=strategy)
    guard = FiniteGuard("classify", "synth/sub02")
    with pytest.raises(TrainingDiverged, match="a non-finite value on another DDP rank"):
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.5)}, None, 0)
    with pytest.raises(TrainingDiverged, match="another DDP rank"):
        guard.on_predict_batch_end(trainer, None, {"probs": torch.ones(2, 2) / 2}, None, 0)
    with pytest.raises(TrainingDiverged, match="another DDP rank"):
        guard.on_train_epoch_end(trainer, torch.nn.Linear(2, 2))
    assert strategy.calls == [(False, False)] * 3


def test_a_diverging_fold_is_recorded_never_pooled_and_the_run_fails(data_env, tmp_path, capsys):
    """The issue's probe: `-- --model.init_args.lr 1e10` used to pool blank probabilities."""
    cfg, run_dir = make_experiment(data_env, tmp_path, pretrain=False)
    code = loso.main(["--config", str(cfg), "--", "--model.init_args.lr", "1e10"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "fold 1/3 synth/sub01: FAILED" in out and "stopping: the 2 fold(s) after it" in out
    failed = json.loads((run_dir / "folds" / "synth__sub01" / "FAILED.json").read_text())
    assert failed["stage"] == "classify" and failed["fold"] == "synth/sub01"
    assert isinstance(failed["epoch"], int) and failed["global_step"] >= 1
    assert f"diverged at epoch {failed['epoch']}, global step {failed['global_step']}" in err
    assert (
        not list(run_dir.glob("folds/*/predictions.csv"))
        and not (run_dir / "results.json").exists()
    )


class _TerminateAtFirstStep(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        os.kill(os.getpid(), signal.SIGTERM)  # what a cluster does to a preempted job


def test_a_failed_fold_is_listed_never_pooled_and_sigterm_stops_its_retraining(
    data_env, tmp_path, capsys, monkeypatch
):
    """One fold of an otherwise sound run diverges (its loss is made NaN): the others are
    pooled, the report names the failed fold, the exit code is 1. Retraining it is stopped by
    SIGTERM (exit 143, the fold named), then resumed. The precision that ran is recorded:
    16-mixed is bf16-mixed on a CPU."""
    from moext.tasks.base import ClassificationTask

    cfg, run_dir = make_experiment(data_env, tmp_path, pretrain=False)
    real_loss, real_guard = ClassificationTask.training_loss, loso.add_guard

    def nan_for_sub02(self, batch, logits):
        loss = real_loss(self, batch, logits)
        return loss * float("nan") if self.trainer.datamodule.fold == "synth/sub02" else loss

    monkeypatch.setattr(ClassificationTask, "training_loss", nan_for_sub02)
    overrides = ["--", "--trainer.precision", "16-mixed", "--trainer.max_epochs", "1"]
    argv = ["--config", str(cfg), "--folds", "synth/sub01", "synth/sub02", *overrides]
    assert loso.main(argv) == 1
    out, err = capsys.readouterr()
    assert "trainer.precision 16-mixed runs as bf16-mixed" in out
    assert "FAILED (not pooled): synth/sub02" in out and "synth/sub02: classify stage" in err
    fold = json.loads((run_dir / "folds" / "synth__sub01" / "fold.json").read_text())
    assert fold["precision"] == "bf16-mixed"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["overall"]["n"] == 6 and "synth/sub02" in results["folds_failed"]
    assert results["folds_missing"] == ["synth/sub02", "synth/sub03"]
    assert loso.main(["--config", str(cfg), "--report", *overrides]) == 1  # the report too
    monkeypatch.setattr(ClassificationTask, "training_loss", real_loss)

    def add_guard(trainer, stage, fold=None):  # a cluster preempts the job at the first step
        trainer.callbacks.append(_TerminateAtFirstStep())
        return real_guard(trainer, stage, fold)

    monkeypatch.setattr(loso, "add_guard", add_guard)
    retrain = ["--config", str(cfg), "--folds", "synth/sub02", *overrides]
    assert loso.main(retrain) == 143  # Lightning alone would exit 0 and go on
    assert "interrupted by SIGTERM during fold 1/1 synth/sub02" in capsys.readouterr().err
    assert not list((run_dir / "folds" / "synth__sub02").glob("*.csv"))
    monkeypatch.setattr(loso, "add_guard", real_guard)
    assert loso.main(retrain) == 0  # resumed: retrained, pooled with the finished fold
    assert "cleared the leftovers" in capsys.readouterr().out
    assert not (run_dir / "folds" / "synth__sub02" / "FAILED.json").exists()
    assert json.loads((run_dir / "results.json").read_text())["overall"]["n"] == 12


def test_a_diverging_pretraining_stage_stops_the_run_before_any_fold(
    data_env, tmp_path, capsys, monkeypatch
):
    from moext.tasks import MoExtPretrainTask

    cfg, run_dir = make_experiment(data_env, tmp_path)
    real = MoExtPretrainTask.training_step
    monkeypatch.setattr(MoExtPretrainTask, "training_step", lambda *a: real(*a) * float("inf"))
    assert loso.main(["--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"moext loso: pretrain stage diverged at epoch 0, global step \d+: the training loss is inf", err)  # fmt: skip
    assert (
        not (run_dir / "pretrain" / "pretrained.ckpt").exists() and not (run_dir / "folds").exists()
    )


# --- fault 5: SIGTERM / SIGINT ------------------------------------------------------------


def test_signals_raise_interrupted_with_the_shell_exit_codes():
    before = signal.getsignal(signal.SIGTERM)
    for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        with pytest.raises(Interrupted) as caught, stop_on_signals():
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises before this ends
        assert caught.value.exit_code == code
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def _loso_workers(pid: int) -> list[int]:
    """Process ids of the ``moext loso --skip-report`` workers whose parent is ``pid`` (Linux
    /proc; other children of the test process, left by earlier tests, are not counted)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and b"moext.cli" in command and b"--skip-report" in command:
            found.append(int(proc.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigterm_stops_the_workers_and_a_rerun_resumes(data_env, tmp_path, capfd):
    """`moext loso --workers 2`: SIGTERM while both worker processes train stops them all
    (exit 143; each worker names its fold; none is left), and the same command resumes, the two
    folds side by side."""
    cfg, run_dir = make_experiment(data_env, tmp_path)
    argv = ["--config", str(cfg), "--workers", "2", "--gpus", "0", "--folds", "synth/sub01", "synth/sub03"]  # fmt: skip
    workers: list[int] = []

    def preempt() -> None:  # a cluster preempting the job once both workers train their fold
        deadline = time.monotonic() + 600
        while len(list(run_dir.glob("folds/*/.lock"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers.extend(_loso_workers(os.getpid()))
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()
    assert loso.main(argv) == 143
    err = capfd.readouterr().err
    assert "moext loso: interrupted by SIGTERM during 2 worker(s)" in err
    assert "interrupted by SIGTERM during fold 1/1 synth/sub0" in err  # a worker named its fold
    assert len(workers) == 2 and not [p for p in workers if Path(f"/proc/{p}").exists()]

    assert loso.main(argv) == 0  # the same command resumes
    assert "pretraining: reusing" in capfd.readouterr().out  # pretrained once, before the signal
    results = json.loads((run_dir / "results.json").read_text())
    assert results["folds_done"] == 2 and results["folds_missing"] == ["synth/sub02"]
    assert results["overall"]["n"] == 12


# --- fault 2: damaged or oddly named frames -----------------------------------------------


def test_prepare_and_loso_list_dropped_clips_stray_files_and_damaged_frames(
    synth_root, tmp_path, monkeypatch, capsys, caplog
):
    from moext.data.pairs.datamodule import MERDataModule
    from moext.data.readers import read_dataset
    from moext.experiment import prepare

    root = tmp_path / "data"
    shutil.copytree(synth_root / "synth", root / "synth")
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(root))
    monkeypatch.chdir(CONF.parent.parent)
    first = {s.subject: s for s in reversed(read_dataset("synth", root / "synth").samples)}
    stray = first["sub01"].apex_path.with_name(f"img{first['sub01'].apex} copy.jpg")
    stray.write_bytes(first["sub01"].apex_path.read_bytes())  # a copy beside the apex
    first["sub02"].apex_path.unlink()  # a clip loses its apex frame
    lost = first["sub02"].id
    cfg = str(CONF / "classify.yaml")
    assert prepare.main(["--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "1 annotated clip(s) rejected by the readers, not used:" in out
    assert f"{lost} (CASME2-coding-20190701.xlsx row " in out
    assert f"apex frame {first['sub02'].apex} not found" in out and f"'{stray.name}'" in out
    loso.experiment_data(open_experiment(cfg))  # what `moext loso` prints before it starts
    assert lost in capsys.readouterr().out
    dm = MERDataModule(task="classify", protocol="synth-3", datasets=["synth"],
                       image_size=64, landmarks="none", fold="synth/sub01")  # fmt: skip
    dm.setup("fit")
    assert f"fold synth/sub01: its training set lacks 1 clip(s) the readers rejected: {lost}" in caplog.text  # fmt: skip

    onset = first["sub03"].onset_path
    onset.write_bytes(onset.read_bytes()[: onset.stat().st_size * 6 // 10])
    assert prepare.main(["--config", cfg]) == 2
    err = capsys.readouterr().err
    assert f"{first['sub03'].id}: ImageReadError: cannot decode image {onset}: damaged or truncated" in err  # fmt: skip


# --- fault 6: both stages are checked before anything trains ------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--model.init_args.net.backbone", "resnet1888"],
         r"classification stage \(.*\): cannot build it: .*resnet1888"),
        (["--model.init_args.net.feature_dim", "48"],
         r"classification stage .* cannot take the weights of the pretraining stage .*feature_dim: checkpoint 32 vs model 48"),
        (["--data.init_args.image_size", "32"],
         r"classification stage .*net.image_size=64 but data.init_args.image_size=32"),
        (["--model.init_args.num_classes", "5"], r"num_classes=5 but the data's protocol has 3"),
    ],
)  # fmt: skip
def test_preflight_finds_stage_errors_before_training(data_env, override, message):
    classify = parse_stage(CONF / "classify.yaml", override)
    with pytest.raises(StageConfigError, match=message):
        check_stages(classify, parse_stage(CONF / "pretrain.yaml"), ("neg", "pos", "sur"))


def test_loso_reports_a_late_error_at_once_as_one_line(data_env, tmp_path, capsys):
    cfg, run_dir = make_experiment(data_env, tmp_path)
    start = time.monotonic()
    code = loso.main(["--config", str(cfg), "--", "--model.init_args.net.feature_dim", "48"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("moext loso: error: classification stage")
    assert "feature_dim: checkpoint 32 vs model 48" in err
    assert not (run_dir / "pretrain").exists() and time.monotonic() - start < 60  # nothing trained


# --- fault 7: smaller ------------------------------------------------------------------------


def test_missing_config_and_loso_typos_are_one_line(tmp_path, capsys):
    from moext.experiment import prepare

    missing = str(tmp_path / "nope.yaml")
    assert loso.main(["--config", missing]) == 2
    assert prepare.main(["--config", missing]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"moext loso: error: config file {missing} not found",
                   f"moext prepare: error: config file {missing} not found"]  # fmt: skip
    typo = tmp_path / "typo.yaml"
    typo.write_text("loso:\n  pretrian_per_fold: true\n")
    assert loso.main(["--config", str(typo)]) == 2
    assert "unknown keys in loso: ['pretrian_per_fold']" in capsys.readouterr().err


def test_files_are_written_with_the_umask_not_0600(tmp_path):
    old = os.umask(0o002)  # a group sharing a cache or a run folder
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_write(tmp_path / "b.npy", lambda tmp: np.save(tmp, np.zeros(2)))
        from moext.data.pairs.cache import PairCache, PrepareSettings
        from moext.data.records import Sample

        frame = tmp_path / "img1.png"
        frame.write_bytes(b"x")
        sample = Sample("synth", "sub01", "c", (frame,), (1,), onset=1, apex=1)
        entry = PairCache(tmp_path / "cache", PrepareSettings(size=2, backend="none")).put(
            sample, np.zeros((2, 2, 2, 3), np.uint8)
        )
    finally:
        os.umask(old)
    for path in (tmp_path / "a.json", tmp_path / "b.npy", entry):
        assert path.stat().st_mode & 0o777 == 0o664, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.npy", "cache", "img1.png"]


# --- issue 24: a run's record, the Trainer's settings, what a signal interrupted ---------------

CLASSES = ("negative", "positive", "surprise")
FOLDS = ["synth/sub01", "synth/sub02", "synth/sub03"]


@pytest.fixture(scope="module")
def finished_run(synth_root, tmp_path_factory):
    """A finished run of the tests' experiment without pretraining (1 epoch, 3 folds), made once
    per module; tests read or damage a copy (:func:`copy_run`)."""
    tmp = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOEXT_DATA_ROOT", str(synth_root))
        patch.setenv("WANDB_MODE", "disabled")
        patch.chdir(CONF.parent.parent)
        cfg, run_dir = make_experiment(synth_root, tmp, pretrain=False)
        cfg.write_text(cfg.read_text().replace("max_epochs: 2", "max_epochs: 1"))
        assert loso.main(["--config", str(cfg)]) == 0
    return cfg, run_dir


def copy_run(finished: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a finished run folder under tmp_path, and its config pointing at it."""
    cfg, run_dir = finished
    runs = tmp_path / "runs"
    shutil.copytree(run_dir, runs / run_dir.name)
    copied = tmp_path / cfg.name
    copied.write_text(cfg.read_text().replace(str(run_dir.parent), str(runs)))
    return copied, runs / run_dir.name


def _edit_record(run_dir: Path, change) -> None:
    path = run_dir / "experiment.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record, indent=2))


def test_a_run_seals_its_record_and_refuses_it_edited(finished_run, data_env, tmp_path, capsys):
    """Faults 4 and 5 on a run folder as `moext loso` writes it: every fold.json carries the
    digest of experiment.json; a fold taken out of the record, or the method relabelled, is
    refused by --report, by compare and before a resumed run trains anything."""
    from moext.cli import main as cli

    cfg, run_dir = copy_run(finished_run, tmp_path)
    record = json.loads((run_dir / "experiment.json").read_text())
    carried = {
        json.loads(p.read_text())["record_digest"] for p in run_dir.glob("folds/*/fold.json")
    }
    assert carried == {record["record_digest"]} and len(record["folds"]) == 3
    assert loso.main(["--config", str(cfg), "--report"]) == 0  # intact
    assert "UNVERIFIED" not in capsys.readouterr().out

    _edit_record(run_dir, lambda r: r["settings"]["classify"].update(
        {"model.class_path": "moext.tasks.srmcl_classify.SRMCLClassifyTask"}))  # fmt: skip
    assert loso.main(["--config", str(cfg), "--report"]) == 2
    assert cli(["compare", str(run_dir)]) == 2
    edited = f"{run_dir / 'experiment.json'} was edited after the run recorded it"
    assert capsys.readouterr().err.splitlines() == [
        f"moext loso: error: {edited}: its settings, folds, held-out samples or classes no longer "
        "match its record digest; restore the original file, or delete the run folder and run "
        "the experiment again; results are never read from an edited record",
        f"moext compare: error: {edited}: its settings, folds, held-out samples or classes no "
        "longer match its record digest; restore the original file, or delete the run folder "
        "and run the experiment again; results are never read from an edited record",
    ]
    (run_dir / "experiment.json").write_text(json.dumps(record))  # restored: read again
    assert loso.main(["--config", str(cfg), "--report"]) == 0

    def drop_sub03(r):
        r["folds"].remove("synth/sub03")
        del r["fold_samples"]["synth/sub03"]

    _edit_record(run_dir, drop_sub03)
    shutil.rmtree(run_dir / "folds" / "synth__sub03")
    assert cli(["compare", str(run_dir)]) == 2  # was: a complete run of 12 samples
    assert loso.main(["--config", str(cfg), "--report"]) == 2
    assert loso.main(["--config", str(cfg)]) == 2  # the run refuses it before training
    assert capsys.readouterr().err.count(edited) == 3
    assert not (run_dir / "folds" / "synth__sub03").exists()


def test_a_run_folder_of_an_older_moext_reports_as_an_unverified_record(
    finished_run, tmp_path, capsys
):
    cfg, run_dir = copy_run(finished_run, tmp_path)
    for record in [run_dir / "experiment.json", *run_dir.glob("folds/*/fold.json")]:
        text = json.loads(record.read_text())
        del text["record_digest"]
        record.write_text(json.dumps(text))
    assert loso.main(["--config", str(cfg), "--report"]) == 0  # still reported ...
    out = capsys.readouterr().out
    assert "[loso] UNVERIFIED RECORD: " in out and "UNVERIFIED RECORD (experiment.json" in out
    assert json.loads((run_dir / "results.json").read_text())["record_verified"] is False
    assert "record_digest" not in json.loads((run_dir / "experiment.json").read_text())  # unsealed


def test_trainer_settings_that_lightning_refuses_fail_before_the_run_folder(
    data_env, tmp_path, capsys
):
    """Fault 7: `trainer.max_epochs: -3` was Lightning's traceback after experiment.json."""
    cfg, run_dir = make_experiment(data_env, tmp_path, pretrain=False)
    assert loso.main(["--config", str(cfg), "--", "--trainer.max_epochs", "-3"]) == 2
    assert capsys.readouterr().err == (
        f"moext loso: error: classification stage ({cfg}): the Trainer refuses its settings: "
        "MisconfigurationException: `max_epochs` must be a non-negative integer or -1. You "
        "passed in -3.\n"
    )
    assert not run_dir.exists()
    pretrain = parse_stage(CONF / "pretrain.yaml", ["--trainer.max_steps", "-5"])
    with pytest.raises(
        StageConfigError, match=r"^pretraining stage \(.*pretrain.yaml\): the Trainer"
    ):
        check_stages(parse_stage(CONF / "classify.yaml"), pretrain, CLASSES)
    # where a stage runs is checked where it runs (a login node has no GPU)
    on_gpus = [
        "--trainer.accelerator",
        "gpu",
        "--trainer.devices",
        "4",
        "--trainer.strategy",
        "ddp",
    ]
    check_stages(parse_stage(CONF / "classify.yaml", on_gpus), None, CLASSES)


class _Worker:
    """A ``--workers`` process stand-in: when its parent first waits for it, the folds ``share``
    of a finished run appear (as written by the workers), then the cluster sends SIGTERM."""

    def __init__(self, finished: Path, run_dir: Path, share: list[str]) -> None:
        self.finished, self.run_dir, self.share, self.code = finished, run_dir, share, None

    def poll(self) -> int | None:
        return self.code

    def send_signal(self, signum: int) -> None:  # passed on by the parent: the worker ends
        self.code = -signum

    def wait(self, timeout: float | None = None) -> int:
        if self.code is None:
            self.code = 0
            for fold in self.share:
                name = fold.replace("/", "__")
                shutil.copytree(self.finished / "folds" / name, self.run_dir / "folds" / name)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        return self.code


@pytest.mark.parametrize(
    ("written", "said"),
    [
        (["synth/sub01", "synth/sub02", "synth/sub03"],
         "interrupted by SIGTERM after every fold had finished (3 of 3), while the 2 worker(s) "
         "were exiting, before the results were pooled."),
        (["synth/sub02"],
         "interrupted by SIGTERM during 2 worker(s) training folds (1 of 3 finished; each worker "
         "named the fold it was training above)."),
    ],
)  # fmt: skip
def test_a_signal_to_the_workers_says_what_it_interrupted(
    finished_run, tmp_path, monkeypatch, capsys, written, said
):
    """Fault 9: a SIGTERM after every fold wrote its predictions said "during 2 worker(s)
    training folds"."""
    cfg, run_dir = copy_run(finished_run, tmp_path)
    shutil.rmtree(run_dir / "folds")
    monkeypatch.setattr(loso, "start", lambda exp, preflight=True: (FOLDS, CLASSES))
    workers = iter([written, []])
    monkeypatch.setattr(
        loso, "start_worker", lambda command, gpu: _Worker(finished_run[1], run_dir, next(workers))
    )
    assert loso.main(["--config", str(cfg), "--workers", "2"]) == 143
    assert f"moext loso: {said}" in capsys.readouterr().err


def test_a_signal_while_pooling_says_so(finished_run, tmp_path, monkeypatch, capsys):
    cfg, run_dir = copy_run(finished_run, tmp_path)

    def preempted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(loso, "pool_run", preempted)
    assert loso.main(["--config", str(cfg), "--report"]) == 143
    assert "moext loso: interrupted by SIGTERM while pooling the results" in capsys.readouterr().err


# --- issue 24: a frame of another size, a missing middle frame, a damaged cache entry ----------


def _data_copy(synth_root: Path, tmp_path: Path, monkeypatch) -> tuple[Path, list]:
    """A copy of the tests' generated database as the data root, and its micro clips."""
    from moext.data.readers import read_dataset

    root = tmp_path / "data"
    shutil.copytree(synth_root / "synth", root / "synth")
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(root))
    monkeypatch.chdir(CONF.parent.parent)
    return root, [s for s in read_dataset("synth", root / "synth").samples if s.kind == "micro"]


def _clip_dm(root: Path):
    from moext.data.clips.datamodule import ClipDataModule

    return ClipDataModule(protocol="synth-3", datasets=["synth"], root=str(root), image_size=32,
                          landmarks="none")  # fmt: skip


def test_a_frame_of_another_size_fails_prepare_naming_the_file_and_both_sizes(
    synth_root, tmp_path, monkeypatch, capsys
):
    import cv2

    from moext.data.records import DatasetError
    from moext.experiment import prepare

    root, samples = _data_copy(synth_root, tmp_path, monkeypatch)

    def shrink(path: Path) -> bytes:  # one JPEG resized to 120 x 120 in a 160 x 160 clip
        original = path.read_bytes()
        assert cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (120, 120)))
        return original

    apex, onset = samples[0].apex_path, samples[0].onset_path
    original = shrink(apex)  # pairs: the apex of another size than its onset
    assert prepare.main(["--config", str(CONF / "classify.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{samples[0].id}: FrameSizeError: {apex} is 120x120 pixels but the clip's onset {onset} is 160x160" in err  # fmt: skip
    apex.write_bytes(original)

    clip = samples[1]
    middle = next(n for n in clip.frame_numbers if n not in (clip.onset, clip.apex))
    shrink(clip.frame_path(middle))  # clips: a frame in the middle
    with pytest.raises(DatasetError, match="1 clip") as err:
        _clip_dm(root).prepare_data()
    assert f"{clip.frame_path(middle)} is 120x120 pixels but the clip's onset {clip.onset_path} is 160x160" in str(err.value)  # fmt: skip


def test_a_missing_middle_frame_drops_the_clip_and_prepare_lists_it(
    synth_root, tmp_path, monkeypatch, capsys
):
    """img53 deleted from a clip with onset 46 and offset 57 used to give an 11-frame clip with
    a silent time gap; the clip is now dropped by the reader and listed."""
    from moext.data.clips.cache import ClipCache
    from moext.experiment import prepare

    root, samples = _data_copy(synth_root, tmp_path, monkeypatch)
    clip = samples[0]
    gap = next(n for n in clip.frame_numbers[1:-1] if n != clip.apex)
    clip.frame_path(gap).unlink()
    assert prepare.main(["--config", str(CONF / "classify.yaml")]) == 0
    out = capsys.readouterr().out
    assert "annotated clip(s) rejected by the readers, not used:" in out
    assert f"{clip.id} (CASME2-coding-20190701.xlsx row " in out
    assert f"1 frame(s) missing between onset {clip.onset} and offset {clip.offset}" in out
    dm = _clip_dm(root)
    report = dm.prepare_data()
    assert report.ok and clip.id not in report.computed + report.reused
    assert any(clip.id in line for line in dm.data_notes())
    folder = ClipCache(dm.cache_root(), dm.prepare_settings(), dm.max_frames).root / clip.dataset
    assert not list((folder / clip.subject).glob(f"{clip.clip}.*.clip.*.npy"))  # none with a gap
    assert list((folder / samples[1].subject).glob(f"{samples[1].clip}.*.clip.*.npy"))


def test_a_zero_filled_flow_entry_is_refused_at_load_and_recomputed_by_prepare(
    synth_root, tmp_path, monkeypatch
):
    from moext.data.entries import CacheError
    from moext.data.flow.cache import FlowCache
    from moext.data.flow.datamodule import FlowDataModule

    root, _ = _data_copy(synth_root, tmp_path, monkeypatch)
    dm = FlowDataModule(task="classify", protocol="synth-3", datasets=["synth"], root=str(root),
                        image_size=32, landmarks="none", fold="synth/sub01")  # fmt: skip
    assert len(dm.prepare_data().flow.computed) == 18
    samples, _, _ = dm.read_samples()
    entry = FlowCache(dm.cache_root(), dm.prepare_settings(), dm.tvl1).path(samples[3])
    size = entry.stat().st_size
    with open(entry, "r+b") as f:  # zero-filled in place: header and size intact
        f.seek(128)
        f.write(bytes(size - 128))
    with pytest.raises(CacheError, match=rf"(?s)1 flow entries are unreadable.*{entry}.*damaged"):
        dm.setup("fit")
    summary = dm.prepare_data().summary()
    assert "flow: computed 1 in" in summary and "reused 17" in summary
    assert f"corrupt entries recomputed 1\n  corrupt: {samples[3].id}: damaged" in summary
    assert str(entry) in summary
    dm.setup("fit")
