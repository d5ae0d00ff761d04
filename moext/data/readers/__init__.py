"""Database readers: annotation spreadsheet + frame folders -> :class:`~moext.data.records.Sample`.

One module per database (:mod:`.casme2`, :mod:`.samm`, :mod:`.smic`, :mod:`.casme3`,
:mod:`.casme` for CAS(ME) I, :mod:`.mmew`, :mod:`.fourdme` for 4DME); each reader
returns a :class:`~moext.data.records.ReadResult` with the usable samples, the rows it rejected
and the rows it corrected (rules in :mod:`.spreadsheet`). The spreadsheet databases are each a
column mapping plus quirk hooks on one row -> Sample builder
(:class:`.spreadsheet.SpreadsheetReader`; its module says how to add one), whose action-unit
cells :mod:`.aus` normalises. Readers only list folders; they never decode an image.
:func:`read_dataset` picks a reader by name:

* ``casme2``, ``samm``, ``smic``, ``casme3``, ``casme``, ``mmew``, ``4dme``: one database;
  options go to its reader (``kind="both"`` reads micro and macro clips of
  ``casme2``/``casme3``; ``frames="color"`` 4DME's colour frames).
* ``synth``: the generated database (CASME II layout, ``dataset="synth"``): micro clips, plus
  macro clips when its macro spreadsheet is present.
* ``megc2019``: CASME II + SAMM + SMIC-HS for the MEGC2019 composite. ``root`` holds the
  folders ``CASME2/``, ``SAMM/`` and ``SMIC/`` (see :data:`MEGC2019_FOLDERS`), each overridable
  with ``casme2_root=``, ``samm_root=``, ``smic_root=``.

:data:`FRAME_RATES` holds each database's frame rate (what a temporal filter, e.g. phase-based
magnification's band, is measured in); :func:`frame_rate` looks one up by a sample's ``dataset``,
:func:`frame_rates` by a name :func:`read_dataset` takes (``megc2019``: its three databases).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from moext.data.readers.casme import read_casme
from moext.data.readers.casme2 import read_casme2, read_synth
from moext.data.readers.casme3 import read_casme3
from moext.data.readers.fourdme import read_fourdme
from moext.data.readers.mmew import read_mmew
from moext.data.readers.samm import read_samm
from moext.data.readers.smic import read_smic
from moext.data.records import DatasetError, ReadResult

MEGC2019_FOLDERS = {"casme2": "CASME2", "samm": "SAMM", "smic": "SMIC"}


def read_megc2019(
    root: str | Path,
    casme2_root: str | Path | None = None,
    samm_root: str | Path | None = None,
    smic_root: str | Path | None = None,
    frames: str = "raw",
) -> ReadResult:
    """Read the three databases of the MEGC2019 composite (CASME II, SAMM, SMIC-HS).

    Args:
        root: folder holding ``CASME2/``, ``SAMM/`` and ``SMIC/``.
        casme2_root: CASME II folder, instead of ``root/CASME2``.
        samm_root: SAMM folder, instead of ``root/SAMM``.
        smic_root: SMIC folder (holding ``HS/``), instead of ``root/SMIC``.
        frames: CASME II frames, ``"raw"`` or ``"cropped"``.
    """
    root = Path(root)
    given = {"casme2": casme2_root, "samm": samm_root, "smic": smic_root}
    if not root.is_dir() and None in given.values():
        expected = ", ".join(f"{root / folder}/" for folder in MEGC2019_FOLDERS.values())
        raise DatasetError(f"megc2019: root folder {root} not found (expected {expected})")
    roots = {name: given[name] or root / folder for name, folder in MEGC2019_FOLDERS.items()}
    result = read_casme2(roots["casme2"], frames=frames)
    result.extend(read_samm(roots["samm"]))
    result.extend(read_smic(roots["smic"]))
    return result


READERS: dict[str, Callable[..., ReadResult]] = {
    "casme2": read_casme2,
    "samm": read_samm,
    "smic": read_smic,
    "casme3": read_casme3,
    "synth": read_synth,
    "megc2019": read_megc2019,
    "casme": read_casme,
    "mmew": read_mmew,
    "4dme": read_fourdme,
}
DATASETS = tuple(READERS)

#: Frames per second of each database's clips (by ``Sample.dataset``): CAS(ME) I 60, CASME II
#: 200, SAMM 200, SMIC-HS 100 (its VIS and NIR parts, 25 fps, are not read), CAS(ME)^3 30 (part
#: A's 2D video), MMEW 90, 4DME 60 (its 2D grey and colour videos); sources in
#: docs/magnification.md. ``synth``, the generated database, is ours:
#: 30, so that its default 12-frame micro clips last 0.4 s, as a real micro-expression does (0.2
#: to 0.5 s).
FRAME_RATES: dict[str, float] = {
    "casme": 60.0,
    "casme2": 200.0,
    "samm": 200.0,
    "smic": 100.0,
    "casme3": 30.0,
    "mmew": 90.0,
    "4dme": 60.0,
    "synth": 30.0,
}


def frame_rate(dataset: str) -> float | None:
    """The frame rate of a database's clips (``Sample.dataset``), or None when unknown."""
    return FRAME_RATES.get(dataset)


def frame_rates(name: str) -> dict[str, float | None]:
    """The frame rate of every database a :func:`read_dataset` name reads.

    By ``Sample.dataset`` (``megc2019``: CASME II, SAMM and SMIC-HS); None where unknown.
    """
    parts = MEGC2019_FOLDERS if name == "megc2019" else (name,)
    return {part: frame_rate(part) for part in parts}


def read_dataset(name: str, root: str | Path, **options: object) -> ReadResult:
    """Read a database by name (one of :data:`DATASETS`).

    Args:
        name: ``casme2``, ``samm``, ``smic``, ``casme3``, ``casme``, ``mmew``, ``4dme``,
            ``synth`` or ``megc2019``.
        root: the database folder, as its reader documents it.
        **options: passed to the reader (``spreadsheet``, ``kind``, ``frames``, ``sheet``, ...).
            For readers with micro and macro clips (``casme2``-layout, ``casme3``), ``kind:
            both`` reads both; then ``spreadsheet`` / ``sheet`` name the micro annotation and
            ``macro_spreadsheet`` / ``macro_sheet`` the macro one (with ``kind: macro`` alone,
            either pair works).

    Raises:
        ValueError: unknown name, or options that do not fit together.
        DatasetError: the database cannot be read.
    """
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    kind = options.get("kind")
    if name not in ("casme2", "casme3"):
        return READERS[name](root, **options)
    if kind == "both":
        result = READERS[name](root, **_options_for(options, "micro"))
        result.extend(READERS[name](root, **_options_for(options, "macro")))
        return result
    return READERS[name](root, **_options_for(options, kind or "micro"))


def _options_for(options: dict[str, object], kind: str) -> dict[str, object]:
    """The reader options of one kind, from options that may name both kinds' annotations."""
    out = {k: v for k, v in options.items() if k not in ("macro_spreadsheet", "macro_sheet")}
    out["kind"] = kind
    if kind == "macro":
        if options.get("kind") == "both":  # then spreadsheet / sheet name the micro annotation
            out.pop("spreadsheet", None)
            out.pop("sheet", None)
        for key in ("spreadsheet", "sheet"):
            if f"macro_{key}" in options:
                if key in out:
                    raise ValueError(f"kind='macro': give {key} or macro_{key}, not both")
                out[key] = options[f"macro_{key}"]
    return out


__all__ = [
    "DATASETS",
    "FRAME_RATES",
    "MEGC2019_FOLDERS",
    "READERS",
    "frame_rate",
    "frame_rates",
    "read_casme",
    "read_casme2",
    "read_casme3",
    "read_dataset",
    "read_fourdme",
    "read_megc2019",
    "read_mmew",
    "read_samm",
    "read_smic",
    "read_synth",
]
