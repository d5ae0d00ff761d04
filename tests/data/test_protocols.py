"""Label protocols, the MEGC2019 composite above all (checked on a tree holding all 442 entries)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from moext.data.protocols import (
    PROTOCOLS,
    fold_id,
    get_protocol,
    load_official_list,
    match_key,
    select,
)
from moext.data.readers import read_casme3, read_megc2019
from moext.data.records import Sample
from tests.data import fixtures as fx


def sample(
    dataset: str, subject: str, clip: str, emotion: str | None, kind: str = "micro"
) -> Sample:
    return Sample(
        dataset, subject, clip, (Path("1.jpg"), Path("2.jpg")), (1, 2), 1, 2, 2, emotion, kind
    )


@pytest.fixture(scope="module")
def megc(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    result = read_megc2019(fx.write_megc2019(tmp_path_factory.mktemp("megc2019")))
    assert result.rejected == []
    return result.samples


# --- the official list -------------------------------------------------------------------------


def test_official_list_is_shipped_whole() -> None:
    entries = load_official_list()
    assert len(entries) == 442
    assert Counter(e.dataset for e in entries) == {"smic": 164, "casme2": 145, "samm": 133}
    assert Counter(e.label for e in entries) == {0: 250, 1: 109, 2: 83}
    subjects = {
        d: len({e.subject for e in entries if e.dataset == d}) for d in ("smic", "casme2", "samm")
    }
    assert subjects == {"smic": 16, "casme2": 24, "samm": 28}
    assert (entries[0].dataset, entries[0].subject, entries[0].filename, entries[0].label) == (
        "casme2",
        "sub01",
        "EP02_01f",
        1,
    )


def test_match_key_maps_list_and_folder_spellings() -> None:
    assert match_key("smic", "s01", "s01_ne_01") == match_key("smic", "s1", "s1_ne_01")
    assert match_key("smic", "s11", "s11_po_02") == ("smic", "s11", "s11_po_02")
    assert match_key("smic", "s01", "s01_ne_01") != match_key("smic", "s10", "s10_ne_01")
    assert match_key("samm", "6", "006_1_2") == match_key("samm", "006", "006_1_2")
    assert match_key("casme2", "sub01", "EP02_01f") == ("casme2", "sub01", "ep02_01f")


# --- cde3 --------------------------------------------------------------------------------------


def test_cde3_is_exactly_the_official_composite(megc: list[Sample]) -> None:
    selected = select("cde3", megc)
    assert len(selected) == 442 and len(selected.labels) == 442
    assert selected.classes == ("negative", "positive", "surprise")
    assert selected.class_counts() == {"negative": 250, "positive": 109, "surprise": 83}
    assert len({fold_id(s) for s in selected.samples}) == 68
    per_dataset = Counter(s.dataset for s in selected.samples)
    assert per_dataset == {"smic": 164, "casme2": 145, "samm": 133}
    subjects = Counter(
        s.dataset for s in {(s.dataset, s.subject): s for s in selected.samples}.values()
    )
    assert subjects == {"smic": 16, "casme2": 24, "samm": 28}
    per_class = Counter(
        (s.dataset, label) for s, label in zip(selected.samples, selected.labels, strict=True)
    )
    assert [per_class["smic", k] for k in range(3)] == [70, 51, 43]
    assert [per_class["casme2", k] for k in range(3)] == [88, 32, 25]
    assert [per_class["samm", k] for k in range(3)] == [92, 26, 15]


def test_cde3_labels_and_clips_come_from_the_list(megc: list[Sample]) -> None:
    selected = select("cde3", megc)
    listed = {match_key(e.dataset, e.subject, e.filename): e.label for e in load_official_list()}
    for s, label in zip(selected.samples, selected.labels, strict=True):
        assert listed[match_key(s.dataset, s.subject, s.clip)] == label
    chosen = {s.id for s in selected.samples}
    assert "smic/s1/s1_ne_01" in chosen  # listed as s01/s01_ne_01
    assert "samm/006/006_1_2" in chosen  # listed as 6/006_1_2
    assert "samm/028/028_4_1" in chosen and "samm/032/032_3_1" in chosen  # corrected quirks kept
    assert "casme2/sub04/EP12_01f" not in chosen  # not on the list


def test_cde3_reports_samples_off_the_list_and_entries_not_found(megc: list[Sample]) -> None:
    selected = select("cde3", megc)
    assert Counter(e.reason for e in selected.excluded) == {
        "not on the official MEGC2019 list": 136
    }
    missing = [s for s in megc if s.id != "smic/s1/s1_ne_01"]
    selected = select("cde3", missing)
    assert len(selected) == 441
    [gap] = [e for e in selected.excluded if "not among the samples" in e.reason]
    assert gap.clip == "smic/s01/s01_ne_01"
    assert "megc2019_combined_3class_gt.csv" in gap.source


def test_cde3_never_labels_macro_clips() -> None:
    macro = [sample("smic", "s1", "s1_ne_01", "negative", kind="macro")]
    selected = select("cde3", macro)
    assert len(selected) == 0
    assert all("not among the samples" in e.reason for e in selected.excluded)


# --- emotion protocols -------------------------------------------------------------------------


def test_casme2_5_has_249_samples_with_the_2019_coding(megc: list[Sample]) -> None:
    selected = select("casme2-5", megc)
    assert len(selected) == 249
    assert selected.classes == ("happiness", "disgust", "repression", "surprise", "others")
    assert selected.class_counts() == {
        "happiness": 32,
        "disgust": 63,
        "repression": 27,
        "surprise": 28,
        "others": 99,
    }
    assert {s.dataset for s in selected.samples} == {"casme2"}
    assert Counter(e.reason for e in selected.excluded) == {
        "emotion 'sadness' is not a class of casme2-5": 4,
        "emotion 'fear' is not a class of casme2-5": 2,
    }


def test_samm_5(megc: list[Sample]) -> None:
    selected = select("samm-5", megc)
    assert selected.class_counts() == {
        "anger": 57,
        "contempt": 12,
        "happiness": 26,
        "surprise": 15,
        "other": 26,
    }
    assert len(selected.excluded) == 9 + 8 + 6  # disgust, fear, sadness


def test_smic_3(megc: list[Sample]) -> None:
    selected = select("smic-3", megc)
    assert selected.class_counts() == {"negative": 70, "positive": 51, "surprise": 43}


def test_casme3_3_maps_emotions_and_drops_others(tmp_path: Path) -> None:
    samples = read_casme3(fx.write_casme3(tmp_path)).samples
    selected = select("casme3-3", samples)
    labels = {s.id: label for s, label in zip(selected.samples, selected.labels, strict=True)}
    assert labels == {
        "casme3/spNO.1/a_100": 0,  # disgust
        "casme3/spNO.1/a_300": 1,  # happy
        "casme3/spNO.1/b_50": 2,  # surprise
        "casme3/spNO.2/j_20": 0,  # fear
        "casme3/spNO.3/c_200": 0,  # anger
        "casme3/spNO.149/d_500": 0,  # sad
    }
    assert [e.clip for e in selected.excluded] == ["casme3/spNO.40/e_50"]  # 'Others'


def test_synth_3_and_macro_clips() -> None:
    samples = [
        sample("synth", "sub01", "EP02_01f", "happiness"),
        sample("synth", "sub01", "EP03_01f", "disgust"),
        sample("synth", "sub02", "EP04_01f", "surprise"),
        sample("synth", "sub02", "EP12_01f", "happiness", kind="macro"),
        sample("casme2", "sub01", "EP02_01f", "happiness"),
    ]
    selected = select("synth-3", samples)
    assert selected.classes == ("negative", "positive", "surprise")
    assert [s.clip for s in selected.samples] == ["EP02_01f", "EP03_01f", "EP04_01f"]
    assert selected.labels == [1, 0, 2]
    assert {s.dataset for s in selected.samples} == {"synth"}


def test_protocol_registry() -> None:
    assert set(PROTOCOLS) == {
        *("cde3", "casme2-5", "samm-5", "smic-3", "casme3-3", "synth-3"),
        *("casme-4", "casme2-4", "samm-4"),  # AKMNet's
        *("mmew-7", "4dme-5", "composite-3", "au"),  # issue 23
    }
    assert get_protocol("cde3").datasets == ("casme2", "samm", "smic")
    with pytest.raises(ValueError, match="unknown protocol 'cde5'"):
        select("cde5", [])


def test_fold_id_is_unique_across_databases() -> None:
    a, b = (
        sample("casme2", "sub01", "EP02_01f", "happiness"),
        sample("synth", "sub01", "EP02_01f", "happiness"),
    )
    assert fold_id(a) == "casme2/sub01" and fold_id(a) != fold_id(b)
