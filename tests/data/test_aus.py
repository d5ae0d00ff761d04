"""Action-unit notations of every database -> one normalised set (moext/data/readers/aus.py),
read through each reader from a fixture tree written with that database's real notations."""

from __future__ import annotations

from pathlib import Path

import pytest

from moext.data.protocols import au_targets, check_aus, select
from moext.data.readers import read_dataset
from moext.data.readers.aus import parse_aus
from moext.data.records import ActionUnit
from tests.data import fixtures as fx

L, R = "L", "R"


@pytest.mark.parametrize(
    ("cell", "units"),
    [
        ("1+2+R4", [(1,), (2,), (4, R)]),  # CASME II
        ("4+L10", [(4,), (10, L)]),  # CASME II
        ("R12 + R15", [(12, R), (15, R)]),  # SAMM: spaces around +
        ("R14A", [(14, R, "A")]),  # SAMM: side prefix, intensity suffix
        ("4B+7C", [(4, None, "B"), (7, None, "C")]),
        ("AU4+AU12", [(4,), (12,)]),  # CAS(ME)^3
        ("AU12R", [(12, R)]),  # a side after the number
        ("AU1+AU2+AU4(k)", [(1,), (2,)]),  # 4DME: the marked code left out
        ("AU1，AU2", [(1,), (2,)]),  # a full-width comma
        (12.0, [(12,)]),  # a number cell
        ("L12+R12+12", [(12, L), (12, R), (12,)]),  # each written unit once
        ("12+12", [(12,)]),
    ],
)
def test_every_notation_gives_the_normalised_units(cell, units):
    code = parse_aus(cell)
    assert code.annotated and code.units == tuple(ActionUnit(*u) for u in units)


def test_what_is_not_taken_as_written_is_said():
    alternatives = parse_aus("R12 or R14", "Action Units")
    assert alternatives.units == (ActionUnit(12, R),)
    assert alternatives.notes == (
        "Action Units 'R12 or R14' holds alternatives ('R12' | 'R14'): the first, 'R12', is used",
    )
    marked = parse_aus("AU4(k)", "AUs")
    assert marked.annotated and marked.units == () and "AU4(k) marked, left out" in marked.notes[0]
    assert parse_aus("AU4(k)", keep_marked=True).units == (ActionUnit(4),)
    partly = parse_aus("4+x+AU0")
    assert partly.units == (ActionUnit(4),) and "'x', 'AU0' not an action unit" in partly.notes[0]
    nothing = parse_aus("x")
    assert not nothing.annotated and nothing.aus is None and len(nothing.notes) == 2


@pytest.mark.parametrize("cell", [None, "", "  ", "/", "-"])
def test_blank_cells_are_not_annotated_silently(cell):
    code = parse_aus(cell)
    assert code.aus is None and not code.notes


def test_question_mark_is_not_annotated_with_a_note():
    code = parse_aus("?", "Action Units")
    assert code.aus is None and code.notes == ("Action Units is '?': no action units coded",)


def _aus(result) -> dict[str, tuple[ActionUnit, ...] | None]:
    return {s.clip: s.aus for s in result.samples}


def test_casme2_notations_through_the_reader(tmp_path: Path):
    clips = [
        fx.Clip("01", "EP02_01f", 46, 59, 100, "happiness", "1+2+R4"),
        fx.Clip("02", "EP03_02f", 10, 14, 20, "others", "4+L10"),
        fx.Clip("03", "EP04_02f", 10, 14, 20, "others", "?"),
        fx.Clip("04", "EP05_02f", 10, 14, 20, "others", ""),
    ]
    result = read_dataset("casme2", fx.write_casme2(tmp_path / "CASME2", clips))
    assert _aus(result) == {
        "EP02_01f": (ActionUnit(1), ActionUnit(2), ActionUnit(4, R)),
        "EP03_02f": (ActionUnit(4), ActionUnit(10, L)),
        "EP04_02f": None,
        "EP05_02f": None,
    }
    reported = {c.clip: c.reason for c in result.corrected}
    assert reported == {"casme2/sub03/EP04_02f": "Action Units is '?': no action units coded"}


def test_samm_notations_through_the_reader(tmp_path: Path):
    clips = [
        fx.Clip("006", "006_1_2", 10, 12, 14, "Anger", "R12 + R15"),
        fx.Clip("006", "006_1_3", 10, 12, 14, "Other", "R14A"),
        fx.Clip("007", "007_1_1", 10, 12, 14, "Happiness", "R12 or R14"),
    ]
    result = read_dataset("samm", fx.write_samm(tmp_path / "SAMM", clips))
    assert _aus(result) == {
        "006_1_2": (ActionUnit(12, R), ActionUnit(15, R)),
        "006_1_3": (ActionUnit(14, R, "A"),),
        "007_1_1": (ActionUnit(12, R),),
    }
    [note] = result.corrected
    assert note.clip == "samm/007/007_1_1" and "alternatives" in note.reason


def test_casme_and_casme3_notations_through_the_readers(tmp_path: Path):
    casme = [fx.Clip(1, "EP01_5", 8, 12, 20, "amusement", "6+L12", frames=range(5, 25))]
    result = read_dataset("casme", fx.write_casme(tmp_path / "CASME", casme))
    assert _aus(result) == {"EP01_5": (ActionUnit(6), ActionUnit(12, L))}
    casme3 = [fx.Clip("spNO.1", "a", "100", "110", "130", "disgust", "AU4+AU12")]
    result = read_dataset("casme3", fx.write_casme3(tmp_path / "CASME3", casme3, None))
    assert _aus(result) == {"a_100": (ActionUnit(4), ActionUnit(12))}


def test_smic_has_no_action_units(tmp_path: Path):
    result = read_dataset("smic", fx.write_smic(tmp_path / "SMIC"))
    assert result.samples and all(s.aus is None for s in result.samples)
    au = select("au", result.samples)
    assert not au.samples
    assert {e.reason for e in au.excluded} == {"no action units annotated (SMIC has no AU coding)"}


def test_au_protocol_and_targets(tmp_path: Path):
    clips = [
        fx.Clip("01", "EP02_01f", 46, 59, 100, "happiness", "6+R12"),
        fx.Clip("02", "EP03_02f", 10, 14, 20, "others", "4+L10"),
        fx.Clip("03", "EP04_02f", 10, 14, 20, "others", ""),
    ]
    samples = read_dataset("casme2", fx.write_casme2(tmp_path / "CASME2", clips)).samples
    labelled = select("au", samples)
    assert [s.clip for s in labelled.samples] == ["EP02_01f", "EP03_02f"]
    assert labelled.labels == [-1, -1] and labelled.classes == ()
    assert [(e.clip, e.reason) for e in labelled.excluded] == [
        ("casme2/sub03/EP04_02f", "no action units annotated")
    ]
    targets = au_targets(labelled.samples, (4, 12, 10))
    assert targets.tolist() == [[0, 1, 0], [1, 0, 1]]  # any side counts


@pytest.mark.parametrize(
    ("aus", "message"),
    [([], "aus is empty"), ([1, 0], "AU numbers in 1..99"), ([4, 4], "AU \\[4\\] more than once")],
)
def test_au_sets_are_checked(aus, message):
    with pytest.raises(ValueError, match=message):
        check_aus(aus)
