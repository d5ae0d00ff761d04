"""Action-unit cells -> normalised :class:`~moext.data.records.ActionUnit` sets, for every database.

Each database writes its FACS codes its own way (shared/data-formats.md, "Action-unit
notations"); :func:`parse_aus` reads all of them into one form, the AU number with its side
(``L`` / ``R``, or none) and its intensity (``A`` to ``E``, where coded):

* CASME II ``1+2+R4``, ``4+L10``; CAS(ME) I the same ``+``-joined lists;
* SAMM ``R12 + R15`` (spaces around ``+``), ``R14A`` (side prefix, intensity suffix);
* CAS(ME)^3 ``AU4+AU12`` (an ``AU`` prefix; a side may follow the number, ``AU12R``);
* 4DME ``AU1+AU2+AU4(k)``;
* separators ``+``, ``,``, ``;``, spaces and the full-width ``＋`` / ``，``; case ignored.

What is not taken as written is said in the result's ``notes`` (the readers report them as
corrections, ``moext data summary`` lists them):

* **alternatives**: ``R12 or R14`` (SAMM): the coders could not decide; the first alternative
  is used;
* **marked codes**: ``AU4(k)`` (4DME): left out, as MEB's 4DME reader drops them
  (``keep_marked=True`` keeps them);
* **tokens that are no action unit** (``x``, ``12?``, ``AU0``): left out, naming each.

A cell that codes nothing is "not annotated" (``annotated`` False, ``units`` empty): blank,
``/`` or ``-`` silently (an uncoded clip, the usual case of macro clips), ``?`` or a cell whose
every token is unusable with a note. A cell whose only codes are marked is annotated with no AU
present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from moext.data.records import ActionUnit

#: Cells that code nothing, silently.
BLANK = frozenset({"", "/", "-", "none", "nan"})
#: The highest FACS code accepted (action descriptors and head/eye codes go up to the 90s).
MAX_AU = 99
_SEPARATORS = re.compile(r"[+,;＋，、\s]+")
#: Spaces inside one code (``AU 12``, ``R 12``, ``4 (k)``), closed before splitting.
_INNER_SPACE = re.compile(r"(?i)\b(AU|L|R)\s+(?=\d)|\s+(?=\()")
_ALTERNATIVES = re.compile(r"\s+or\s+", re.IGNORECASE)
_TOKEN = re.compile(
    r"(?:AU)?(?P<pre>[LR])?(?:AU)?(?P<number>\d{1,2})(?P<post>[LR])?(?P<intensity>[A-E])?"
    r"(?:\((?P<mark>[^)]*)\))?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AUCode:
    """What one AU cell codes.

    Attributes:
        units: the action units coded present, in the cell's order, each once.
        annotated: whether the cell codes the clip at all (False: blank, ``?``, or nothing
            usable).
        notes: what was not taken as written (alternatives, marked codes, unusable tokens).
    """

    units: tuple[ActionUnit, ...] = ()
    annotated: bool = False
    notes: tuple[str, ...] = ()

    @property
    def aus(self) -> tuple[ActionUnit, ...] | None:
        """``units``, or None when the cell is not annotated (the form of ``Sample.aus``)."""
        return self.units if self.annotated else None


def parse_token(token: str) -> tuple[ActionUnit, str | None] | None:
    """One code (``R14A``, ``AU4(k)``, ``12``) -> the action unit and its mark (``"k"``).

    None when the token is no action unit.
    """
    match = _TOKEN.fullmatch(token.replace(" ", ""))
    if match is None or (match["pre"] and match["post"]):
        return None
    number = int(match["number"])
    if not 1 <= number <= MAX_AU:
        return None
    side = (match["pre"] or match["post"] or "").upper() or None
    intensity = (match["intensity"] or "").upper() or None
    mark = match["mark"].strip().lower() if match["mark"] is not None else None
    return ActionUnit(number, side, intensity), mark


def parse_aus(cell: object, column: str = "AU", keep_marked: bool = False) -> AUCode:
    """Read one AU cell (any database's notation; see the module docstring).

    Args:
        cell: the cell as read (text, a number such as ``12`` or ``12.0``, or None).
        column: the column's name, for the notes.
        keep_marked: keep codes with a mark such as ``(k)`` (default: left out, noted).

    Returns:
        The action units, whether the cell is annotated, and notes on what was not taken as
        written.
    """
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)
    text = " ".join(str(cell if cell is not None else "").split())
    if text.lower() in BLANK:
        return AUCode()
    if text == "?":
        return AUCode(notes=(f"{column} is '?': no action units coded",))
    notes: list[str] = []
    alternatives = [a.strip() for a in _ALTERNATIVES.split(text) if a.strip()]
    if len(alternatives) > 1:
        shown = " | ".join(repr(a) for a in alternatives)
        notes.append(
            f"{column} {text!r} holds alternatives ({shown}): the first, "
            f"{alternatives[0]!r}, is used"
        )
    units: list[ActionUnit] = []
    marked, unusable = [], []
    for token in _SEPARATORS.split(_INNER_SPACE.sub(lambda m: m[1] or "", alternatives[0])):
        if not token:
            continue
        parsed = parse_token(token)
        if parsed is None:
            unusable.append(token)
            continue
        unit, mark = parsed
        if mark is not None and not keep_marked:
            marked.append(token)
            continue
        if unit not in units:
            units.append(unit)
    if marked:
        notes.append(
            f"{column} {text!r}: {', '.join(marked)} marked, left out (as MEB's reader drops "
            "marked codes)"
        )
    if unusable:
        shown = ", ".join(repr(t) for t in unusable)
        notes.append(f"{column} {text!r}: {shown} not an action unit, left out")
    annotated = bool(units) or bool(marked)
    if not annotated:
        notes.append(f"{column} {text!r}: no usable action unit, the clip counts as not coded")
    return AUCode(tuple(units), annotated, tuple(notes))


def au_name(number: int) -> str:
    """The name of an AU number in class lists and columns: ``12`` -> ``"AU12"``."""
    return f"AU{number}"
