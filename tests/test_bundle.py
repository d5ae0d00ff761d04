"""Bundles: ``moext export`` of a run's final model or its fold models, ``moext.load_bundle``
from a folder or the Hugging Face Hub (the hub calls replaced by a local folder), refusals."""

import json
import shutil

import pytest
import torch

import moext
from moext.cli import main
from moext.experiment import bundle
from moext.experiment.bundle import (
    BUNDLE_FILE,
    CARD_FILE,
    bundle_model_config,
    load_bundle,
    model_card,
    read_manifest,
)
from moext.experiment.final import FINAL_DIR, WEIGHTS, read_weights


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The trained run's final model and ensemble, exported once through the command."""
    _, run_dir = trained_run
    out = tmp_path_factory.mktemp("bundles")
    assert main(["export", str(run_dir), "--out", str(out / "final")]) == 0
    assert main(["export", str(run_dir), "--out", str(out / "ensemble"), "--ensemble"]) == 0
    return out / "final", out / "ensemble"


def batch(size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Pairs as the pair DataModule serves them on the device."""
    g = torch.Generator().manual_seed(seed)
    onset = torch.rand(size, 3, 64, 64, generator=g)
    return {"onset": onset, "apex": (onset + 0.05).clamp(0, 1), "index": torch.arange(size)}


def test_a_final_bundle_holds_the_model_its_config_and_its_estimate(trained_run, exported):
    _, run_dir = trained_run
    folder, _ = exported
    assert sorted(p.name for p in folder.iterdir()) == [CARD_FILE, BUNDLE_FILE, WEIGHTS]
    manifest = json.loads((folder / BUNDLE_FILE).read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert manifest["kind"] == "final" and manifest["inputs"] == "pairs"
    assert manifest["classes"] == ["negative", "positive", "surprise"]
    assert manifest["model"]["class_path"] == "moext.tasks.moext_classify.MoExtClassifyTask"
    assert manifest["model"]["init_args"].get("pretrained") is None  # its weights instead
    assert manifest["preprocessing"]["crop"] == {
        "size": 64,
        "backend": "none",
        "weights": None,
        "on_no_face": "error",
    }
    assert manifest["loso"]["overall"] == results["overall"]
    assert manifest["loso"]["ci"] == results["ci"] and manifest["loso"]["complete"]
    trained = manifest["trained_on"]
    assert trained["datasets"] == ["synth"] and trained["protocol"] == "synth-3"
    assert (trained["subjects"], trained["samples"], trained["pretrained"]) == (3, 18, True)
    card = (folder / CARD_FILE).read_text()
    uf1 = results["overall"]["uf1"]
    lo, hi = results["ci"]["overall"]["uf1"]
    assert f"{uf1:.4f} [{lo:.4f}, {hi:.4f}]" in card
    assert "Nothing measures this model itself" in card and "synth-3" in card
    assert "public domain" in card  # the licence note of the generated database
    # the weights are the final model's, unchanged
    assert (folder / WEIGHTS).read_bytes() == (run_dir / FINAL_DIR / WEIGHTS).read_bytes()


def test_load_bundle_gives_the_trained_model(trained_run, exported):
    _, run_dir = trained_run
    folder, _ = exported
    assert moext.load_bundle is load_bundle
    model = moext.load_bundle(folder)
    assert model.kind == "final" and model.classes == ("negative", "positive", "surprise")
    assert not model.training and len(model.members) == 1
    state = read_weights(run_dir / FINAL_DIR / WEIGHTS)
    loaded = model.members[0].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    probs = model.predict(batch())["probs"]
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(1), torch.ones(2))
    task = model.members[0]
    assert torch.allclose(probs, task.logits(batch()).softmax(-1).detach())


def test_an_ensemble_averages_the_fold_models(exported):
    _, folder = exported
    manifest = read_manifest(folder)
    assert manifest["kind"] == "ensemble"
    assert [m["name"] for m in manifest["members"]] == ["synth/sub01", "synth/sub02", "synth/sub03"]
    model = load_bundle(folder)
    with torch.no_grad():
        each = [m.logits(batch()).softmax(-1) for m in model.members]
    assert len(each) == 3 and not torch.allclose(each[0], each[1])
    assert torch.allclose(model.predict(batch())["probs"], torch.stack(each).mean(0))
    assert "ensemble of the 3 fold models" in (folder / CARD_FILE).read_text()


def test_export_refusals(trained_run, exported, tmp_path, capsys, monkeypatch):
    _, run_dir = trained_run
    folder, _ = exported
    assert main(["export", str(run_dir), "--out", str(folder)]) == 2
    assert "exists" in capsys.readouterr().err
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "folds" / "synth__sub02" / WEIGHTS).unlink()
    assert main(["export", str(copy), "--out", str(tmp_path / "b"), "--ensemble"]) == 2
    err = capsys.readouterr().err
    assert "1 of 3 folds kept no weights (synth/sub02)" in err and "keep_fold_weights" in err
    shutil.rmtree(copy / FINAL_DIR)
    assert main(["export", str(copy), "--out", str(tmp_path / "b")]) == 2
    assert "no final model" in capsys.readouterr().err
    # under a file: was a NotADirectoryError traceback from the temporary folder
    (tmp_path / "afile").write_text("")
    assert main(["export", str(run_dir), "--out", str(tmp_path / "afile" / "b")]) == 2
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    # an AU detector's run (its predictions hold true_<AU> columns) is not a classifier's
    monkeypatch.setattr(bundle, "is_au_run", lambda columns: "label" in columns)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "b")]) == 2
    assert "an AU detector's run" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "b").exists()


def test_load_refusals(exported, tmp_path):
    folder, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(folder, copy)
    with open(copy / WEIGHTS, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="changed since the export"):
        load_bundle(copy)
    manifest = json.loads((folder / BUNDLE_FILE).read_text())
    (copy / BUNDLE_FILE).write_text(json.dumps({**manifest, "moext_bundle": 99}))
    with pytest.raises(ValueError, match="bundle layout 99"):
        load_bundle(copy)
    with pytest.raises(FileNotFoundError, match="not a moext bundle"):
        load_bundle(tmp_path)


def test_push_and_pull_through_the_hub(trained_run, exported, tmp_path, monkeypatch, capsys):
    """The real code calls huggingface_hub; here its two entry points stand on a local folder."""
    import huggingface_hub

    hub = tmp_path / "hub"
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **options):
            calls.append(("create", repo_id, options))

        def upload_folder(self, repo_id, folder_path, **options):
            calls.append(("upload", repo_id, options["repo_type"]))
            shutil.copytree(folder_path, hub / repo_id)

    def snapshot_download(repo_id, revision=None):
        if not (hub / repo_id).is_dir():
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 {repo_id}")
        return str(hub / repo_id)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    folder, _ = exported
    assert bundle.push_bundle(folder, "lab/moext-tiny") == "https://huggingface.co/lab/moext-tiny"
    assert calls[0] == (
        "create",
        "lab/moext-tiny",
        {"repo_type": "model", "private": True, "exist_ok": True},
    )
    assert calls[1] == ("upload", "lab/moext-tiny", "model")
    for source in ("hf://lab/moext-tiny", "lab/moext-tiny", "hf://lab/moext-tiny@main"):
        model = load_bundle(source)
        assert model.kind == "final" and model.source == source
    with pytest.raises(FileNotFoundError, match="no such folder, and the Hugging Face Hub gave no"):
        load_bundle("lab/missing")
    # the command: --push after the export, private unless --public
    out = tmp_path / "second"
    assert (
        main(["export", str(trained_run[1]), "--out", str(out), "--push", "lab/b", "--public"]) == 0
    )
    assert calls[-2][2]["private"] is False and (hub / "lab" / "b" / BUNDLE_FILE).is_file()
    assert "pushed to https://huggingface.co/lab/b" in capsys.readouterr().out


def test_a_bundle_loads_no_weights_from_elsewhere():
    model = {
        "class_path": "x.Task",
        "init_args": {
            "pretrained": "/lab/pretrain.ckpt",
            "net": {"pretrained": True, "checkpoint": "/lab/r18.pth", "backbone_checkpoint": "b"},
        },
    }
    net = bundle_model_config(model)["init_args"]
    assert net["pretrained"] is None
    assert net["net"] == {"pretrained": False, "checkpoint": None, "backbone_checkpoint": None}


def test_the_card_says_what_licences_the_weights_derive_from(exported):
    folder, _ = exported
    manifest = read_manifest(folder)
    manifest["trained_on"]["datasets"] = ["casme2", "samm", "smic"]
    card = model_card(manifest, None)
    assert "license: other" in card and "No LOSO estimate" in card
    for holder in ("CASME II", "SAMM", "SMIC"):
        assert holder in card
    assert card.count("licence agreement") == 3


def test_a_seed_runs_bundle_names_its_run_and_seed(tmp_path):
    assert bundle.run_name(tmp_path / "moext_cde3" / "seed3") == "moext_cde3/seed3"
    assert bundle.run_name(tmp_path / "moext_cde3") == "moext_cde3"


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        (["negative", "positive", "surprise", "other"], "4 classes .* for a model of 3 classes"),
        (["negative", "positive"], "2 classes .* for a model of 3 classes"),
        (["negative", "negative", "surprise"], "not a list of distinct names"),
        ("abc", "not a list of distinct names"),
    ],
)
def test_class_names_that_do_not_fit_the_model_are_refused(exported, tmp_path, classes, expected):
    """An edited ``classes`` loaded: ``moext predict`` then failed on 'zip() argument 2 is
    shorter than argument 1', or gave one probability per letter of a string, or merged two
    classes of one name."""
    folder, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(folder, copy)
    manifest = json.loads((folder / BUNDLE_FILE).read_text())
    (copy / BUNDLE_FILE).write_text(json.dumps({**manifest, "classes": classes}))
    with pytest.raises(ValueError, match=f"{BUNDLE_FILE}: .*{expected}"):
        load_bundle(copy)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"members": []}, "its members are not a list of weights files"),
        ({"members": [{"name": "final", "weights": WEIGHTS}]}, "its members are not a list"),
        ({"members": [{"weights": None, "sha256": "0"}]}, "its members are not a list"),
        ({"model": None}, "its model names no class"),
        ({"data": {}}, "its data names no class"),
    ],
)
def test_a_damaged_manifest_is_one_line_naming_it(exported, tmp_path, edit, expected):
    """No members was a StopIteration traceback (the model's device), a member without its
    SHA-256 a KeyError, a null model an AttributeError."""
    folder, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(folder, copy)
    manifest = json.loads((folder / BUNDLE_FILE).read_text())
    (copy / BUNDLE_FILE).write_text(json.dumps({**manifest, **edit}))
    with pytest.raises(ValueError, match=f"{BUNDLE_FILE}: damaged manifest, {expected}"):
        load_bundle(copy)


def test_a_push_the_hub_refuses_is_one_line(exported, monkeypatch):
    """No token, no network or a bad repository name was the Hub client's traceback."""
    import huggingface_hub

    class OfflineApi:
        def create_repo(self, repo_id, **options):
            raise huggingface_hub.errors.OfflineModeIsEnabled("Cannot reach https://huggingface.co")

    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    folder, _ = exported
    with pytest.raises(ValueError, match="not pushed to the Hugging Face Hub repository 'lab/b'"):
        bundle.push_bundle(folder, "lab/b")
    assert read_manifest(folder)["kind"] == "final"


def test_a_device_this_machine_lacks_is_one_line(exported):
    """``moext predict --device gpu`` (or ``cuda`` without a GPU) was torch's traceback."""
    folder, _ = exported
    devices = ["gpu"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        with pytest.raises(ValueError, match=f"device '{device}': not usable here"):
            load_bundle(folder, device=device)


def test_a_manifest_that_is_not_json_says_to_export_again(exported, tmp_path):
    """It said "damaged record ...; delete its folder to redo that stage" (a run folder's
    advice): deleting a bundle's folder deletes the bundle."""
    folder, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(folder, copy)
    (copy / BUNDLE_FILE).write_text((folder / BUNDLE_FILE).read_text()[:300])
    with pytest.raises(ValueError, match=f"{BUNDLE_FILE}: damaged manifest, not JSON") as raised:
        load_bundle(copy)
    assert "export it again" in str(raised.value) and "delete" not in str(raised.value)
    (copy / BUNDLE_FILE).write_text("[1]")
    with pytest.raises(ValueError, match="damaged manifest, not a JSON object; export it again"):
        load_bundle(copy)
