"""The README's demo, end to end: every method tells the generated classes apart, the demo
compares them, then exports MoExt's final model and predicts a clip with it."""

import json

import pytest

from moext.cli import main

METHODS = ("moext", "akmnet", "htnet", "offapexnet", "rcn", "srmcl", "ststnet")


@pytest.mark.slow
def test_demo_runs_every_method_and_compares_them(tmp_path, monkeypatch):
    """6 synthetic subjects, dlib alignment, each method's LOSO (pretraining where it has one):
    pooled UF1 well above chance (0.33 on three balanced classes) for every method; the
    comparison covers them all on the same 54 samples."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOEXT_DATA_ROOT", "set-by-the-demo")  # the demo sets it; undone after
    assert main(["demo", "--data", str(tmp_path / "demo_data")]) == 0
    runs = tmp_path / "runs" / "demo"
    for method in METHODS:
        results = json.loads((runs / f"{method}_demo" / "results.json").read_text())
        assert results["complete"] and results["overall"]["n"] == 54, method
        assert results["overall"]["uf1"] > 0.6 and results["overall"]["uar"] > 0.6, method
        lo, hi = results["ci"]["overall"]["uf1"]
        assert lo <= results["overall"]["uf1"] <= hi, method
    comparison = json.loads((runs / "comparison.json").read_text())
    assert sorted(r["name"] for r in comparison["runs"]) == sorted(f"{m}_demo" for m in METHODS)
    assert all(r["n"] == 54 for r in comparison["runs"])
    pairs = len(METHODS) * (len(METHODS) - 1) // 2
    assert len({(p["a"], p["b"]) for p in comparison["pairs"]}) == pairs
    assert (runs / "comparison.md").is_file() and (runs / "comparison.png").is_file()
    # the demo ends with MoExt's final model, exported and predicting an unseen subject's clip
    manifest = json.loads((runs / "moext_bundle" / "bundle.json").read_text())
    moext_results = json.loads((runs / "moext_demo" / "results.json").read_text())
    assert manifest["kind"] == "final" and manifest["loso"]["overall"] == moext_results["overall"]
    for source in ("frames", "video"):
        prediction = json.loads((runs / "predict" / f"moext_{source}.json").read_text())
        assert prediction["predicted"] in manifest["classes"] and prediction["frames"] == 12
        assert (
            prediction["clip"]["apex"]["estimated"]
            and (runs / "predict" / f"moext_{source}.png").is_file()
        )
