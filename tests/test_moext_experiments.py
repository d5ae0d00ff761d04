"""Every MoExt experiment config (experiments/moext/) parses, and each stage pair agrees on the
architecture."""

from pathlib import Path

import pytest

from moext.experiment.config import parse_config
from moext.experiment.settings import read_settings
from moext.nn.moext import ARCHITECTURE_FIELDS

REPO = Path(__file__).parents[1]
EXPERIMENTS = REPO / "experiments" / "moext"
LOSO_CONFIGS = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if "loso:" in p.read_text())
PAPER = {
    "cde3.yaml": ("cde3", 3),
    "casme2_5class.yaml": ("casme2-5", 5),
    "samm_5class.yaml": ("samm-5", 5),
    "casme3_3class.yaml": ("casme3-3", 3),
}


def test_every_paper_table_has_a_config():
    names = {p.name for p in LOSO_CONFIGS}
    assert set(PAPER) <= names
    ablations = {
        p.name for p in (EXPERIMENTS / "ablations").glob("*.yaml") if "loso:" in p.read_text()
    }
    assert ablations == {
        "no_pretraining.yaml",
        "no_macro.yaml",
        "no_motion_extractor.yaml",
        "no_st.yaml",
        "no_ss.yaml",
    }


@pytest.mark.parametrize("config", LOSO_CONFIGS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_experiment_parses_and_matches_its_pretraining(config, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = parse_config(str(config))
    model = cfg.model.init_args
    data = cfg.data.init_args
    assert cfg.model.class_path == "moext.tasks.MoExtClassifyTask" and data.task == "classify"
    assert model.num_classes == PAPER.get(config.name, ("cde3", 3))[1]
    if config.name in PAPER:
        assert data.protocol == PAPER[config.name][0]
    assert model.pretrained is None  # the runner passes the pretraining checkpoint per run
    assert cfg.trainer.enable_checkpointing is False or config.name.startswith("demo")
    settings = read_settings(config)
    if settings.pretrain_config is None:
        assert "no_pretraining" in config.name
        return
    pre = parse_config(settings.pretrain_config)
    assert (
        pre.model.class_path == "moext.tasks.MoExtPretrainTask"
        and pre.data.init_args.task == "pretrain"
    )
    for field in ARCHITECTURE_FIELDS:
        assert getattr(pre.model.init_args.net, field) == getattr(model.net, field), field
    assert pre.model.init_args.net.image_size == pre.data.init_args.image_size == data.image_size


def test_ablation_pretraining_configs_switch_what_they_say(monkeypatch):
    monkeypatch.chdir(REPO)
    base = parse_config(str(EXPERIMENTS / "pretrain.yaml"))
    assert base.data.init_args.datasets == ["casme2", "casme3"] and base.data.init_args.macro
    assert (base.model.init_args.weight_st, base.model.init_args.weight_ss) == (0.5, 1.0)
    assert base.data.init_args.pseudo_apex_n == 5 and base.model.init_args.views == 3
    ab = EXPERIMENTS / "ablations"
    assert parse_config(str(ab / "pretrain_no_macro.yaml")).data.init_args.macro is False
    assert parse_config(str(ab / "pretrain_no_st.yaml")).model.init_args.weight_st == 0
    assert parse_config(str(ab / "pretrain_no_ss.yaml")).model.init_args.weight_ss == 0
    assert (
        parse_config(
            str(ab / "pretrain_no_motion_extractor.yaml")
        ).model.init_args.net.motion_extractor
        is False
    )


def test_pretraining_set_excludes_held_out_subject(synth_root):
    from moext.data import MERDataModule

    dm = MERDataModule(
        task="pretrain", datasets=["synth"], root=str(synth_root), exclude_subjects=["synth/sub01"]
    )
    samples, labels, _ = dm.read_samples()
    assert samples and all(s.subject != "sub01" for s in samples)
    assert {s.kind for s in samples} == {"micro", "macro"}
    no_macro = MERDataModule(task="pretrain", datasets=["synth"], root=str(synth_root), macro=False)
    assert {s.kind for s in no_macro.read_samples()[0]} == {"micro"}


@pytest.mark.parametrize(
    ("ablation", "key", "value"),
    [
        ("pretrain_no_macro", "data.init_args.macro", False),
        ("pretrain_no_st", "model.init_args.weight_st", 0.0),
        ("pretrain_no_ss", "model.init_args.weight_ss", 0.0),
        ("pretrain_no_motion_extractor", "model.init_args.net.motion_extractor", False),
    ],
)
def test_ablation_pretraining_differs_from_the_paper_s_in_one_setting(
    ablation, key, value, monkeypatch
):
    from moext.experiment.config import parse_stage
    from moext.experiment.run_folder import stage_settings

    monkeypatch.chdir(REPO)
    base = stage_settings(parse_stage(EXPERIMENTS / "pretrain.yaml"))
    ab = stage_settings(parse_stage(EXPERIMENTS / "ablations" / f"{ablation}.yaml"))
    assert {k for k in base.keys() | ab.keys() if base.get(k) != ab.get(k)} == {key}
    assert ab[key] == value


def test_paper_configs_state_the_readings_explicitly():
    """Where the paper is silent the configs say what they use (docs/methods/moext.md), so a
    changed default can never change a paper experiment silently."""
    import yaml

    configs = [
        p
        for p in [*EXPERIMENTS.glob("*.yaml"), *(EXPERIMENTS / "ablations").glob("*.yaml")]
        if not p.name.startswith("demo")
    ]
    assert len(configs) == 14  # 4 tables + pretraining, 5 ablations + their 4 pretrainings
    for path in configs:
        raw = yaml.safe_load(path.read_text())
        assert raw["model"]["class_path"].startswith("moext.tasks.MoExt"), path
        init = raw["model"]["init_args"]
        assert init["net"]["projection_normalize"] is False, path
        assert init["net"]["fp32_separator"] is True, path
        assert raw["data"]["init_args"]["expansion"] == 10, path
        if raw["data"]["init_args"]["task"] == "pretrain":
            assert init["reconstruction_reduction"] == "per_pixel_mean", path
            assert init["views"] == 3 and raw["data"]["init_args"]["pseudo_apex_n"] == 5, path
        else:
            assert init["dropout"] == 0.0, path
    demo = yaml.safe_load((EXPERIMENTS / "demo.yaml").read_text())
    assert demo["model"]["init_args"]["dropout"] == 0.2  # the demo's own value, said so there
    assert "not in the paper" in (EXPERIMENTS / "demo.yaml").read_text()


def test_the_configs_moved_under_the_method_s_name_keep_their_run_folders(tmp_path, monkeypatch):
    """experiments/*.yaml and experiments/ablations/ moved to experiments/moext/ (README: "Where
    the configs moved"): every config now lives in its method's folder, the run folder names
    (``loso.name``) are the ones the old paths had, so existing runs/<name>/ folders still match,
    and a pretraining config is found from any working folder."""
    assert not list((REPO / "experiments").glob("*.yaml"))
    assert not (REPO / "experiments" / "ablations").exists()
    names = {str(p.relative_to(EXPERIMENTS)): read_settings(p).name for p in LOSO_CONFIGS}
    assert names == {
        "ablations/no_macro.yaml": "ablation_no_macro",
        "ablations/no_motion_extractor.yaml": "ablation_no_motion_extractor",
        "ablations/no_pretraining.yaml": "ablation_no_pretraining",
        "ablations/no_ss.yaml": "ablation_no_ss",
        "ablations/no_st.yaml": "ablation_no_st",
        "casme2_5class.yaml": "casme2_5class",
        "casme3_3class.yaml": "casme3_3class",
        "cde3.yaml": "cde3",
        "demo.yaml": "moext_demo",
        "samm_5class.yaml": "samm_5class",
    }
    monkeypatch.chdir(tmp_path)  # not the repository: paths resolve from the config's place
    settings = read_settings(EXPERIMENTS / "ablations" / "no_st.yaml")
    assert Path(settings.pretrain_config) == EXPERIMENTS / "ablations" / "pretrain_no_st.yaml"


def test_the_demo_finds_every_method_s_demo_moext_first(tmp_path):
    from moext.experiment.demo import demo_configs, find_experiments

    assert find_experiments().resolve() == (REPO / "experiments").resolve()
    found = demo_configs(REPO / "experiments")
    assert list(found) == ["moext", "akmnet", "htnet", "offapexnet", "rcn", "srmcl", "ststnet"]
    assert found["moext"] == EXPERIMENTS / "demo.yaml"
    for method in ("aaa", "moext", "zzz"):  # a new method sorts by name, after MoExt
        (tmp_path / method).mkdir()
        (tmp_path / method / "demo.yaml").write_text("")
    (tmp_path / "demo.yaml").write_text("")  # a stray top-level demo is no method's
    assert list(demo_configs(tmp_path)) == ["moext", "aaa", "zzz"]
