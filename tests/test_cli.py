"""`moext fit` (LightningCLI) on the generated database: pretrain -> classify round trip."""

import sys
from pathlib import Path

import pytest
import torch

from moext.cli import main
from moext.experiment.prepare import main as prepare
from tests.conftest import CONF


@pytest.fixture
def data_env(synth_root, monkeypatch):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    assert prepare(["--config", str(CONF / "classify.yaml")]) == 0  # prepares pretraining data too
    return synth_root


def _ckpt(root: Path) -> Path:
    found = sorted(root.rglob("*.ckpt"))
    assert found, f"no checkpoint under {root}"
    return found[-1]


def test_fit_pretrain_then_classify_from_checkpoint(data_env, tmp_path, capsys):
    pre_dir, clf_dir = tmp_path / "pre", tmp_path / "clf"
    main(
        ["fit", "--config", str(CONF / "pretrain.yaml"), "--trainer.default_root_dir", str(pre_dir)]
    )
    ckpt = _ckpt(pre_dir)
    assert (
        pre_dir / "lightning_logs" / "version_0" / "reconstructions" / "epoch_000.png"
    ).is_file()
    main(
        [
            "fit",
            "--config",
            str(CONF / "classify.yaml"),
            "--model.init_args.pretrained",
            str(ckpt),
            "--data.init_args.fold",
            "synth/sub01",
            "--trainer.default_root_dir",
            str(clf_dir),
            "--trainer.enable_checkpointing",
            "true",
        ]
    )
    # a checkpoint that does not fit the model: one line naming the field, exit code 2
    mismatch = [
        "--model.init_args.pretrained",
        str(ckpt),
        "--model.init_args.net.feature_dim",
        "48",
    ]
    assert main(["fit", "--config", str(CONF / "classify.yaml"), *mismatch]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moext fit: error: CheckpointMismatchError: ") and err.count("\n") == 1
    assert "feature_dim: checkpoint 32 vs model 48" in err
    pre_state = torch.load(ckpt, weights_only=False)["state_dict"]
    # the CLI's --model.init_args.pretrained really puts the pretrained weights in the classifier
    from moext.experiment.config import lightning_cli

    built = lightning_cli(
        ["--config", str(CONF / "classify.yaml"), "--model.init_args.pretrained", str(ckpt)],
        run=False,
    ).model.state_dict()
    moved = [
        k
        for k in built
        if k.startswith(("net.separator.backbone", "net.separator.shape", "net.motion"))
    ]
    assert moved and all(torch.equal(built[k], pre_state[k]) for k in moved)
    clf_ckpt = _ckpt(clf_dir)
    main(
        [
            "test",
            "--config",
            str(CONF / "classify.yaml"),
            "--data.init_args.fold",
            "synth/sub01",
            "--ckpt_path",
            str(clf_ckpt),
            "--trainer.default_root_dir",
            str(tmp_path / "test"),
        ]
    )
    # predict writes one row per held-out sample
    main(
        [
            "predict", "--config", str(CONF / "classify.yaml"), "--data.init_args.fold",
            "synth/sub01", "--ckpt_path", str(clf_ckpt), "--trainer.default_root_dir",
            str(tmp_path / "pred"),
        ]
    )  # fmt: skip
    [written] = (tmp_path / "pred").rglob("predictions.csv")
    import pandas as pd

    preds = pd.read_csv(written, dtype={"subject": str})
    assert len(preds) == 6 and set(preds["subject"]) == {"sub01"}
    assert {"pred", "prob_negative", "prob_positive", "prob_surprise"} <= set(preds.columns)
    clf_state = torch.load(clf_ckpt, weights_only=False)["state_dict"]
    assert "net.classifier.1.weight" in clf_state and not any(
        k.startswith("net.decoder") for k in clf_state
    )
    assert set(pre_state) > {
        k for k in clf_state if k.startswith(("net.separator.shape", "net.motion"))
    }


def test_fit_bf16_mixed_on_cpu(data_env, tmp_path):
    main(
        [
            "fit",
            "--config",
            str(CONF / "pretrain.yaml"),
            "--trainer.precision",
            "bf16-mixed",
            "--trainer.fast_dev_run",
            "2",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )


def test_classify_without_fold_has_no_test_set(data_env, tmp_path, capsys):
    args = ["test", "--config", str(CONF / "classify.yaml")]
    assert main([*args, "--trainer.default_root_dir", str(tmp_path)]) == 2
    assert "moext test: error: no held-out subject" in capsys.readouterr().err


def test_wrong_num_classes_is_loud(data_env, tmp_path, capsys, monkeypatch):
    args = [
        "fit", "--config", str(CONF / "classify.yaml"), "--model.init_args.num_classes", "5",
        "--data.init_args.fold", "synth/sub01", "--trainer.fast_dev_run", "1",
        "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model.num_classes=5 but the data's protocol has 3" in err and "Traceback" not in err
    monkeypatch.setenv("MOEXT_TRACEBACK", "1")  # for a developer: the traceback
    with pytest.raises(ValueError, match="num_classes"):
        main(args)


def test_data_summary_command(synth_root, capsys):
    import json

    assert (
        main(
            ["data", "summary", "--dataset", "synth", "--root", str(synth_root / "synth"), "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["subjects"] == 3 and out["classes"] == {"negative": 6, "positive": 6, "surprise": 6}


def test_validate_is_refused_with_the_reason(capsys):
    assert main(["validate", "--config", str(CONF / "classify.yaml")]) == 2
    assert "no validation set, on purpose" in capsys.readouterr().err


# --- the front door (issue 24) ----------------------------------------------------------------


def test_help_lists_every_command_and_each_command_has_its_own_help(capsys):
    import re

    import moext
    from moext.cli import COMMANDS

    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    listed = [c.name for c in COMMANDS if c.listed]
    assert {"fit", "test", "predict", "loso", "prepare", "compare", "demo", "data", "synth",
            "flow-analysis"} <= set(listed)  # fmt: skip
    for command in COMMANDS:
        line = f"  {command.name} "
        assert (line in listing) == command.listed, command.name
    assert "validate" not in listing  # refused when typed (see above), never offered
    assert main([]) == 2  # a command is required: the same list
    assert capsys.readouterr().out == listing
    assert main(["--version"]) == 0
    pyproject = (CONF.parents[1] / "pyproject.toml").read_text()
    version = re.search(r'^version = "(.+)"$', pyproject, re.M)[1]
    assert capsys.readouterr().out == f"moext {version}\n" and moext.__version__ == version
    for name in listed:
        try:
            code = main([name, "--help"])
        except SystemExit as done:  # argparse and LightningCLI exit after printing the help
            code = done.code
        assert code == 0, name
        shown = capsys.readouterr().out
        assert shown.startswith("usage: moext") and name.split()[0] in shown.splitlines()[0], name


def test_help_and_version_answer_without_loading_torch():
    """`moext --help` took 7-10 s on 2 cores: cli.py imported every command's module (torch,
    Lightning) before it printed the list. Each command's module now loads when it runs."""
    import subprocess

    code = (
        "import sys; from moext.cli import run; "
        "assert run(['--help']) == 0 and run(['--version']) == 0; "
        "assert 'torch' not in sys.modules, 'torch loaded'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import moext

    assert "commands:" in done.stdout and f"moext {moext.__version__}\n" in done.stdout


def test_an_unknown_command_and_lightnings_validate_are_one_line(capsys):
    assert main(["fitt", "--config", "x.yaml"]) == 2
    assert capsys.readouterr().err == (
        "moext: error: unknown command 'fitt' (did you mean `moext fit`?); `moext --help` lists "
        "the commands\n"
    )
    assert main(["-c", str(CONF / "classify.yaml"), "validate"]) == 2  # LightningCLI has none
    err = capsys.readouterr().err
    assert err.startswith("moext: error: ") and "'validate'" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("option", "line"),
    [
        (["--model.init_args.bogus_key", "3"],
         "model.init_args.bogus_key: not an option of moext.tasks.MoExtClassifyTask"),
        (["--model.init_args.lr", "fast"], "model.init_args.lr: expected float, got 'fast'"),
        (["--trainer.max_epochs", "x"], "trainer.max_epochs: expected int, got 'x'"),
        (["--trainer.bogus", "1"], "unrecognized arguments: --trainer.bogus 1"),
    ],
)  # fmt: skip
def test_a_bad_option_is_one_line_not_the_usage(option, line, capsys):
    """Fault 10: jsonargparse printed ~60 lines of usage before the line that matters."""
    assert main(["fit", "--config", str(CONF / "classify.yaml"), *option]) == 2
    assert capsys.readouterr().err == (
        f"moext fit: error: {line} (`moext fit --help` lists the options)\n"
    )


def test_a_bad_override_of_an_experiment_is_one_line(capsys):
    from moext.experiment import loso

    config = CONF / "classify.yaml"
    assert loso.main(["--config", str(config), "--", "--model.init_args.lr", "fast"]) == 2
    assert capsys.readouterr().err == (
        f"moext loso: error: {config}: model.init_args.lr: expected float, got 'fast' "
        "(`moext fit --help` lists the options)\n"
    )


def test_a_trainer_setting_lightning_refuses_is_one_line(tmp_path, capsys):
    args = ["--trainer.max_epochs", "-3", "--trainer.default_root_dir", str(tmp_path)]
    assert main(["fit", "--config", str(CONF / "classify.yaml"), *args]) == 2
    assert capsys.readouterr().err == (
        "moext fit: error: trainer: `max_epochs` must be a non-negative integer or -1. You passed "
        "in -3.\n"
    )
    assert not list(tmp_path.iterdir())
