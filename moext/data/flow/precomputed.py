"""Precomputed flow images as a source of the flow DataModule.

The MEGC2019 baselines' inputs as their authors distribute them.

STSTNet's authors (github.com/christy1206/STSTNet, README: "Input data (28x28x3) ... The resized
images of: 1) horizontal optical flow images; 2) vertical optical flow images, and; 3) optical
strain") distribute the onset -> apex flow of the 442 composite (CDE) samples as 28 x 28 RGB
PNGs, each channel min-max scaled to 0..255; HTNet's repository (github.com/wangzhifengharrison/
HTNet) ships the same images. The layouts as distributed:

- HTNet's ``datasets/STSNet_whole_norm_u_v_os/``: one folder, one file per sample named
  ``<subject>_<clip> .png`` (with a space before ``.png``: ``sub01_EP02_01f .png``,
  ``s01_s01_ne_01 .png``, ``006_006_1_2 .png``), listed with their labels in
  ``combined_3_class2_for_optical_flow.csv`` (columns ``dataset,sub,filename_o,label,apex,
  imagename,sub_filename``; ``casme2,sub01,EP02_01f,1,,sub01_EP02_01f.jpg,``);
- STSTNet's ``norm_u_v_os/`` (and HTNet's ``datasets/three_norm_u_v_os/``): one folder per LOSO
  subject holding every sample again, ``<subject>/u_test/<label>/<subject>_<clip>.png`` for its
  own samples and ``u_train/`` for the others'.

:class:`PrecomputedFlow` says where the files are and how they are named (``file_pattern``,
fields ``{dataset}``, ``{subject}``, ``{clip}``, ``{label}`` spelt as the distribution spells
them: SMIC ``s01`` / ``s01_ne_01``, SAMM ``006`` / ``006_1_2``, CASME II ``sub01`` /
``EP02_01f``), and which flow channel each colour holds (``channels``, in RGB order: the
authors' MATLAB code reads the files as RGB = (u, v, strain); read with OpenCV, as HTNet's and
STSTNet's Python code do, the same files give (strain, v, u)).

The samples come from a CSV (``samples``; the authors' columns or ``dataset, subject, clip,
label``) or, by default, from the package's MEGC2019 list
(:func:`moext.data.protocols.load_official_list`); either way they are checked against that list
(the same clips, the same labels) and named as the database readers name them
(``smic/s1/s1_ne_01``, ``samm/006/006_1_2``, ``casme2/sub01/EP02_01f``): the sample ids, subjects
and LOSO folds of the computed path, so ``moext compare`` can put both side by side.
:func:`check_folder` reports every listed file that is missing, unreadable, not 8-bit RGB or of
another size, and every file the pattern matches that no sample claims, by name.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from moext.data.flow.tvl1 import check_channels
from moext.data.images import read_rgb
from moext.data.protocols import OFFICIAL_LIST, load_official_list, match_key
from moext.data.records import DatasetError, Sample

#: The fields a file pattern may use.
PATTERN_FIELDS = ("dataset", "subject", "clip", "label")
#: Column names of a samples CSV, by what they hold (the authors' spelling second).
COLUMNS = {
    "dataset": ("dataset",),
    "subject": ("subject", "sub"),
    "clip": ("clip", "filename_o", "filename"),
    "label": ("label",),
}
_SMIC_NUMBER = re.compile(r"^s0*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class PrecomputedFlow:
    """Where precomputed flow images lie and what they hold.

    Attributes:
        folder: the folder of the images, relative to the data root or absolute.
        file_pattern: a sample's file under ``folder``, with ``{dataset}``, ``{subject}``,
            ``{clip}`` and ``{label}`` spelt as the distribution does (module docstring). HTNet's
            copy: ``"{subject}_{clip} .png"``; STSTNet's per-subject folders:
            ``"{subject}/u_test/{label}/{subject}_{clip}.png"``.
        channels: the flow channel each colour of a file holds, in RGB order (the authors':
            u, v, strain).
        samples: a CSV listing the samples and labels, relative to the data root or absolute;
            ``None``: the package's MEGC2019 list.
    """

    folder: str
    file_pattern: str = "{subject}_{clip}.png"
    channels: tuple[str, ...] = ("u", "v", "strain")
    samples: str | None = None

    def __post_init__(self) -> None:
        check_channels(self.channels)
        if len(self.channels) != 3:
            raise ValueError(
                f"precomputed flow images are RGB: channels names 3, got {list(self.channels)}"
            )
        fields = set(re.findall(r"{(\w*)}", self.file_pattern))
        if not fields or not fields <= set(PATTERN_FIELDS) or "{clip}" not in self.file_pattern:
            raise ValueError(
                f"file_pattern {self.file_pattern!r} must name {{clip}} and may use only "
                f"{', '.join('{' + f + '}' for f in PATTERN_FIELDS)}"
            )


@dataclass(frozen=True)
class Listed:
    """One sample of a precomputed set: the record, its label and its fields.

    The record is named as the readers name it, the fields are spelt as the distribution spells
    them (for the file pattern).
    """

    sample: Sample
    label: int
    fields: dict[str, str]

    def file(self, settings: PrecomputedFlow) -> str:
        """Its file, relative to the folder."""
        return settings.file_pattern.format(**self.fields)


def distribution_spelling(dataset: str, subject: str, clip: str) -> tuple[str, str]:
    """``(subject, clip)`` as the MEGC2019 distribution spells them.

    SMIC ``s01`` / ``s01_ne_01``, SAMM ``006``, CASME II unchanged (from any of the spellings
    :func:`match_key` accepts).
    """
    if dataset == "smic":
        pad = lambda m: f"s{int(m.group(1)):02d}"  # noqa: E731
        return _SMIC_NUMBER.sub(pad, subject), _SMIC_NUMBER.sub(pad, clip)
    if dataset == "samm" and subject.isdigit():
        return f"{int(subject):03d}", clip
    return subject, clip


def reader_spelling(dataset: str, subject: str, clip: str) -> tuple[str, str]:
    """``(subject, clip)`` as the database readers spell them (their folders).

    SMIC ``s1`` / ``s1_ne_01``, SAMM ``006``, CASME II unchanged.
    """
    if dataset == "smic":
        bare = lambda m: f"s{int(m.group(1))}"  # noqa: E731
        return _SMIC_NUMBER.sub(bare, subject), _SMIC_NUMBER.sub(bare, clip)
    return distribution_spelling(dataset, subject, clip)


def _column(header: list[str], what: str, path: Path) -> int:
    names = [h.strip().lower() for h in header]
    for name in COLUMNS[what]:
        if name in names:
            return names.index(name)
    raise DatasetError(
        f"{path}: no {what} column (looked for {', '.join(COLUMNS[what])}; found {header})"
    )


def _rows(path: Path | None) -> list[tuple[str, str, str, str, str]]:
    """``(dataset, subject, clip, label, where)`` of each row of a samples CSV (or the list)."""
    if path is None:
        return [
            (e.dataset, e.subject, e.filename, str(e.label), e.source) for e in load_official_list()
        ]
    try:
        lines = [r for r in csv.reader(path.read_text(encoding="utf-8-sig").splitlines()) if r]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the samples list ({e})") from None
    if not lines:
        raise DatasetError(f"{path}: the samples list is empty")
    if len(lines[0]) == 1 and ";" in lines[0][0]:
        raise DatasetError(f"{path}: its columns are separated by ';': save it with ','")
    header, body, first = lines[0], lines[1:], 2
    if header[0].strip().lower() not in COLUMNS["dataset"]:  # no header: the package's format
        header, body, first = ["dataset", "subject", "clip", "label"], lines, 1
    if not body:
        raise DatasetError(f"{path}: the samples list holds its header only, no sample")
    index = [_column(header, what, path) for what in ("dataset", "subject", "clip", "label")]
    out = []
    for number, row in enumerate(body, start=first):
        if len(row) <= max(index):
            raise DatasetError(f"{path} row {number}: {len(row)} cells, expected {len(header)}")
        out.append((*(row[i].strip() for i in index), f"{path.name} row {number}"))
    return out


def read_samples(samples_csv: Path | None) -> list[Listed]:
    """The samples of a precomputed set, checked against the package's MEGC2019 list.

    Args:
        samples_csv: the CSV listing the samples (resolved), or None for the package's list.

    Returns:
        The samples, in the order listed, named as the readers name them.

    Raises:
        DatasetError: a row that is not on the MEGC2019 list, is listed twice, has another label
            than the list's, or an unreadable label; all of them named.
    """
    official = {match_key(e.dataset, e.subject, e.filename): e.label for e in load_official_list()}
    listed, problems, seen = [], [], set()
    for dataset, subject, clip, label, where in _rows(samples_csv):
        dataset = dataset.lower()
        key = match_key(dataset, subject, clip)
        if key not in official:
            problems.append(f"{where}: {dataset}/{subject}/{clip} is not on {OFFICIAL_LIST}")
            continue
        if key in seen:
            problems.append(f"{where}: {dataset}/{subject}/{clip} is listed twice")
            continue
        seen.add(key)
        if not label.isdigit():
            problems.append(f"{where}: label {label!r} is not 0, 1 or 2")
            continue
        if int(label) != official[key]:
            problems.append(f"{where}: label {label}, {OFFICIAL_LIST} says {official[key]}")
            continue
        subject_d, clip_d = distribution_spelling(dataset, subject, clip)
        subject_r, clip_r = reader_spelling(dataset, subject, clip)
        record = Sample(dataset, subject_r, clip_r, (), (), 0, 0, source=where)
        fields = {"dataset": dataset, "subject": subject_d, "clip": clip_d, "label": label}
        listed.append(Listed(record, int(label), fields))
    if problems:
        source = samples_csv or OFFICIAL_LIST
        raise DatasetError(_listing(f"{source}: {len(problems)} row(s) cannot be used", problems))
    return listed


def _listing(title: str, items: list[str], limit: int = 20) -> str:
    more = [f"... and {len(items) - limit} more"] if len(items) > limit else []
    return "\n  ".join([title + ":", *items[:limit], *more])


def _glob(pattern: str) -> str:
    """The file pattern with every field a wildcard."""
    return re.sub(r"{\w*}", "*", pattern)


def _not_rgb(path: Path) -> str | None:
    """What the file holds when it is not 8-bit RGB (read as colour, grey would pass as u = v)."""
    stored = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    channels = 1 if stored.ndim == 2 else stored.shape[2]
    if channels == 3 and stored.dtype == np.uint8:
        return None
    bits = stored.dtype.itemsize * 8
    return f"{path} holds {channels} channel(s) of {bits} bits, expected 3 of 8 (RGB)"


def check_folder(
    listed: Sequence[Listed],
    folder: Path,
    settings: PrecomputedFlow,
    size: int,
    known: Sequence[Listed] = (),
) -> torch.Tensor:
    """Read every listed sample's image; refuse the set unless all is as listed.

    Each one must be there, readable and ``size`` x ``size``, and every other file the pattern
    matches must be a known sample's.

    Args:
        listed: the samples to read (:func:`read_samples`, maybe some databases only).
        folder: the images' folder (resolved).
        settings: the source's settings.
        size: the side every image must have.
        known: every sample of the list (their files are not extra), ``listed`` included.

    Returns:
        (N, 3, size, size) uint8, the files' RGB channels, in the order of ``listed``.

    Raises:
        DatasetError: naming every missing, unreadable, not 8-bit RGB or wrongly sized file and
            every file that no sample claims.
    """
    if not folder.is_dir():
        raise DatasetError(f"precomputed flow folder {folder} does not exist")
    out = torch.empty((len(listed), 3, size, size), dtype=torch.uint8)
    problems = []
    for i, item in enumerate(listed):
        path = folder / item.file(settings)
        try:
            image = read_rgb(path)
        except FileNotFoundError:
            problems.append(f"{item.sample.id}: missing {path}")
            continue
        except OSError as e:
            problems.append(f"{item.sample.id}: {e}")
            continue
        stored = _not_rgb(path)
        if stored:
            problems.append(f"{item.sample.id}: {stored}")
            continue
        if image.shape[:2] != (size, size):
            h, w = image.shape[:2]
            problems.append(f"{item.sample.id}: {path} is {w}x{h}, expected {size}x{size}")
            continue
        out[i] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    claimed = {(folder / item.file(settings)).resolve() for item in [*listed, *known]}
    extra = sorted(
        p for p in folder.glob(_glob(settings.file_pattern)) if p.resolve() not in claimed
    )
    problems += [f"not a listed sample: {p}" for p in extra]
    if problems:
        title = (
            f"precomputed flow in {folder} ({settings.file_pattern!r}, {len(listed)} samples): "
            f"{len(problems)} problem(s)"
        )
        raise DatasetError(_listing(title, problems))
    return out
