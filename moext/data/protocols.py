"""Label protocols: which samples a benchmark uses, and their class labels.

A :class:`Protocol` names its classes and the databases it draws from; :func:`select` applies it
to samples read by :mod:`moext.data.readers`. Only micro-expression samples are ever labelled.

* ``cde3``: the MEGC2019 composite (CASME II + SAMM + SMIC-HS, 3 classes), built only from the
  official list shipped with the package (:func:`load_official_list`): 442 samples, 68 subjects;
  labels 0 negative, 1 positive, 2 surprise as the list gives them. The list spells SMIC subjects
  ``s01`` and clips ``s01_ne_01`` (HS folders: ``s1``, ``s1_ne_01``) and SAMM subjects unpadded
  (``6`` for ``006``); :func:`match_key` maps both spellings to one key.
* ``casme2-5``: happiness, disgust, repression, surprise, others.
* ``samm-5``: anger, contempt, happiness, surprise, other.
* ``smic-3``: SMIC-HS's folder labels negative, positive, surprise.
* ``casme3-3``: disgust/fear/anger/sad -> negative, happy -> positive, surprise -> surprise.
* ``synth-3``: the generated database: disgust -> negative, happiness -> positive, surprise.
* ``casme-4``, ``casme2-4``, ``samm-4``: AKMNet's four classes (its paper, Sec. IV.A) on CAS(ME)
  I, CASME II and SAMM: positive = happiness (CAS(ME) I also amusement); negative = disgust,
  sadness, contempt, fear, anger (those the database has); surprise; others = tense,
  repression and the database's own others / other. AKMNet uses ``smic-3`` on SMIC-HS.
* ``mmew-7``: MMEW's seven emotions: happiness, surprise, anger, disgust, fear, sadness, others.
* ``4dme-5``: 4DME's five emotion categories: positive, negative, surprise, repression,
  others (a clip labelled with two, ``negative+surprise``, is left out, listed).
* ``composite-3``: the MEGC2019 mapping rule on any of the seven databases (and the generated
  one), for cross-database experiments beyond the official list: negative = repression, anger,
  contempt, disgust, fear, sadness (CAS(ME)^3 ``sad``; SMIC's and 4DME's ``negative``);
  positive = happiness (CAS(ME)^3 ``happy``, CAS(ME) I ``amusement``, SMIC's and 4DME's
  ``positive``); surprise. Others, tense and two-emotion labels are left out. On CASME II, SAMM
  and SMIC it is not the official list (``cde3``), which also leaves out rows by hand.
* ``au``: action-unit detection: every micro sample with an AU annotation, whatever its emotion
  (no class; ``label`` -1); a sample whose AU cell is blank or ``?`` (and every SMIC clip: SMIC
  has no AU coding) is left out, listed. The AUs a model detects are chosen by the DataModule's
  ``aus`` (:func:`au_targets`).

Samples a protocol leaves out are listed in :attr:`LabelledSet.excluded` with the reason.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from moext.data.readers.aus import au_name
from moext.data.records import Rejection, Sample

OFFICIAL_LIST = "megc2019_combined_3class_gt.csv"
#: Every database a protocol can draw from (the generated one included).
ALL_DATASETS = ("casme", "casme2", "samm", "smic", "casme3", "mmew", "4dme", "synth")
#: The AUs an AU-detection experiment detects unless it says otherwise: those frequent across
#: the databases (each coded in at least 50 clips of MEB's six-database union).
DEFAULT_AUS = (1, 2, 4, 6, 12, 14, 15, 17)
THREE_CLASSES = ("negative", "positive", "surprise")
#: AKMNet's classes, in the order of its paper's Fig. 4 (Po, Ne, Su, Ot).
FOUR_CLASSES = ("positive", "negative", "surprise", "others")


@dataclass(frozen=True)
class Protocol:
    """A labelling protocol.

    Attributes:
        name: protocol key (``"cde3"``, ``"casme2-5"``, ...).
        classes: class names; a sample's label is the index of its class here.
        datasets: the databases the protocol draws from.
        emotions: emotion (as the reader spells it) -> class; empty for ``cde3``, whose labels
            come from the official list, and for ``au``.
        action_units: the protocol selects the samples with an AU annotation (``au``): no
            classes, the targets are the AUs (:func:`au_targets`).
    """

    name: str
    classes: tuple[str, ...]
    datasets: tuple[str, ...]
    emotions: Mapping[str, str] = field(default_factory=dict)
    action_units: bool = False

    @property
    def official_list(self) -> bool:
        """Whether samples and labels come from the official MEGC2019 list."""
        return not self.emotions and not self.action_units


def _identity(classes: tuple[str, ...]) -> dict[str, str]:
    return {c: c for c in classes}


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("cde3", THREE_CLASSES, ("casme2", "samm", "smic")),
        Protocol(
            "casme2-5",
            ("happiness", "disgust", "repression", "surprise", "others"),
            ("casme2",),
            _identity(("happiness", "disgust", "repression", "surprise", "others")),
        ),
        Protocol(
            "samm-5",
            ("anger", "contempt", "happiness", "surprise", "other"),
            ("samm",),
            _identity(("anger", "contempt", "happiness", "surprise", "other")),
        ),
        Protocol("smic-3", THREE_CLASSES, ("smic",), _identity(THREE_CLASSES)),
        Protocol(
            "casme3-3",
            THREE_CLASSES,
            ("casme3",),
            {
                "disgust": "negative",
                "fear": "negative",
                "anger": "negative",
                "sad": "negative",
                "happy": "positive",
                "surprise": "surprise",
            },
        ),
        Protocol(
            "synth-3",
            THREE_CLASSES,
            ("synth",),
            {"disgust": "negative", "happiness": "positive", "surprise": "surprise"},
        ),
    )
}


def _four_classes(dataset: str, emotions: dict[str, str]) -> Protocol:
    return Protocol(f"{dataset}-4", FOUR_CLASSES, (dataset,), emotions)


PROTOCOLS.update(
    (p.name, p)
    for p in (
        _four_classes(
            "casme",
            {
                "happiness": "positive",
                "amusement": "positive",
                "disgust": "negative",
                "sadness": "negative",
                "contempt": "negative",
                "fear": "negative",
                "anger": "negative",
                "surprise": "surprise",
                "tense": "others",
                "repression": "others",
                "others": "others",
            },
        ),
        _four_classes(
            "casme2",
            {
                "happiness": "positive",
                "disgust": "negative",
                "sadness": "negative",
                "fear": "negative",
                "contempt": "negative",
                "anger": "negative",
                "surprise": "surprise",
                "repression": "others",
                "tense": "others",
                "others": "others",
            },
        ),
        _four_classes(
            "samm",
            {
                "happiness": "positive",
                "anger": "negative",
                "contempt": "negative",
                "disgust": "negative",
                "fear": "negative",
                "sadness": "negative",
                "surprise": "surprise",
                "other": "others",
            },
        ),
    )
)


#: The MEGC2019 mapping rule, spelled as every database spells its emotions.
COMPOSITE_EMOTIONS = {
    **dict.fromkeys(
        ("repression", "anger", "contempt", "disgust", "fear", "sadness", "sad", "negative"),
        "negative",
    ),
    **dict.fromkeys(("happiness", "happy", "amusement", "positive"), "positive"),
    "surprise": "surprise",
}

PROTOCOLS.update(
    (p.name, p)
    for p in (
        Protocol(
            "mmew-7",
            ("happiness", "surprise", "anger", "disgust", "fear", "sadness", "others"),
            ("mmew",),
            _identity(("happiness", "surprise", "anger", "disgust", "fear", "sadness", "others")),
        ),
        Protocol(
            "4dme-5",
            ("positive", "negative", "surprise", "repression", "others"),
            ("4dme",),
            _identity(("positive", "negative", "surprise", "repression", "others")),
        ),
        Protocol("composite-3", THREE_CLASSES, ALL_DATASETS, COMPOSITE_EMOTIONS),
        Protocol("au", (), ALL_DATASETS, action_units=True),
    )
)


def get_protocol(name: str) -> Protocol:
    """The protocol of a name; raises ValueError listing the known names."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


@dataclass
class LabelledSet:
    """The samples a protocol selected, with their labels (indices into ``classes``)."""

    protocol: str
    classes: tuple[str, ...]
    samples: list[Sample] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    excluded: list[Rejection] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class, in class order."""
        counts = Counter(self.labels)
        return {name: counts[i] for i, name in enumerate(self.classes)}


@dataclass(frozen=True)
class OfficialEntry:
    """One row of the official MEGC2019 list, spelled as the list spells it."""

    dataset: str
    subject: str
    filename: str
    label: int

    @property
    def source(self) -> str:
        """Where the row comes from, for messages: the list's file name and the row's cells."""
        return f"{OFFICIAL_LIST} ({self.dataset},{self.subject},{self.filename})"


def load_official_list() -> list[OfficialEntry]:
    """The official MEGC2019 3-class list shipped in the package (442 entries)."""
    text = resources.files("moext").joinpath("data", OFFICIAL_LIST).read_text(encoding="utf-8")
    rows = [r for r in csv.reader(text.splitlines()) if r]
    return [OfficialEntry(d.strip(), s.strip(), f.strip(), int(label)) for d, s, f, label in rows]


_SMIC_NUMBER = re.compile(r"^s0*(\d+)")


def match_key(dataset: str, subject: str, clip: str) -> tuple[str, str, str]:
    """One key for a clip however the official list or the folders spell it.

    SMIC ``s01``/``s01_ne_01`` and ``s1``/``s1_ne_01`` both give ``s1``/``s1_ne_01``; SAMM
    ``6`` and ``006`` both give ``6``; case is ignored.
    """
    dataset, subject, clip = dataset.lower(), subject.strip().lower(), clip.strip().lower()
    if dataset == "smic":
        subject = _SMIC_NUMBER.sub(r"s\1", subject)
        clip = _SMIC_NUMBER.sub(r"s\1", clip)
    elif dataset == "samm" and subject.isdigit():
        subject = str(int(subject))
    return dataset, subject, clip


def fold_id(sample: Sample) -> str:
    """The LOSO fold key of a sample: ``"{dataset}/{subject}"`` (unique across databases)."""
    return f"{sample.dataset}/{sample.subject}"


#: What a fold holds out: one subject (LOSO, also across databases) or one whole database
#: (leave-one-database-out).
HOLDOUTS = ("subject", "database")


def holdout_fold(sample: Sample, holdout: str = "subject") -> str:
    """The fold a sample is held out in.

    Its subject's :func:`fold_id` (``"casme2/sub01"``), or with ``holdout="database"`` its
    database (``"casme2"``).

    Raises:
        ValueError: ``holdout`` is not one of :data:`HOLDOUTS`.
    """
    if holdout == "subject":
        return fold_id(sample)
    if holdout == "database":
        return sample.dataset
    raise ValueError(f"holdout must be one of {HOLDOUTS}, got {holdout!r}")


def select(protocol: str | Protocol, samples: Iterable[Sample]) -> LabelledSet:
    """Apply a protocol to samples.

    Args:
        protocol: a protocol or its name (see :data:`PROTOCOLS`).
        samples: samples of any databases; those of other databases and macro clips are
            ignored.

    Returns:
        The selected samples and labels. ``excluded`` lists the micro samples of the protocol's
        databases it left out (emotion not a class, or not on the official list) and, for
        ``cde3``, the official entries not found among the samples.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    pool = [s for s in samples if s.kind == "micro" and s.dataset in protocol.datasets]
    result = LabelledSet(protocol.name, protocol.classes)
    if protocol.action_units:
        for sample in pool:
            if sample.aus is None:
                reason = "no action units annotated" + (
                    " (SMIC has no AU coding)" if sample.dataset == "smic" else ""
                )
                result.excluded.append(Rejection(sample.id, reason, sample.source))
                continue
            result.samples.append(sample)
            result.labels.append(-1)
        return result
    if protocol.official_list:
        _select_official(pool, result)
        return result
    for sample in pool:
        name = protocol.emotions.get(sample.emotion or "")
        if name is None:
            reason = f"emotion {sample.emotion!r} is not a class of {protocol.name}"
            result.excluded.append(Rejection(sample.id, reason, sample.source))
            continue
        result.samples.append(sample)
        result.labels.append(protocol.classes.index(name))
    return result


def _select_official(pool: list[Sample], result: LabelledSet) -> None:
    by_key: dict[tuple[str, str, str], Sample] = {}
    for sample in pool:
        key = match_key(sample.dataset, sample.subject, sample.clip)
        if key in by_key:
            reason = f"same clip as {by_key[key].id} ({by_key[key].source})"
            result.excluded.append(Rejection(sample.id, reason, sample.source))
        else:
            by_key[key] = sample
    used = set()
    for entry in load_official_list():
        key = match_key(entry.dataset, entry.subject, entry.filename)
        sample = by_key.get(key)
        if sample is None or key in used:
            clip = f"{entry.dataset}/{entry.subject}/{entry.filename}"
            reason = (
                "listed twice on the official MEGC2019 list"
                if key in used
                else "on the official MEGC2019 list but not among the samples read"
            )
            result.excluded.append(Rejection(clip, reason, entry.source))
            continue
        used.add(key)
        result.samples.append(sample)
        result.labels.append(entry.label)
    for key, sample in by_key.items():
        if key not in used:
            reason = "not on the official MEGC2019 list"
            result.excluded.append(Rejection(sample.id, reason, sample.source))


def check_aus(aus: Iterable[int]) -> tuple[int, ...]:
    """AU numbers to detect, checked: at least one, each a whole number in 1..99, no repeat.

    Raises:
        ValueError: naming what is wrong.
    """
    aus = tuple(aus)
    if not aus:
        raise ValueError("aus is empty: name the action units to detect (e.g. [1, 2, 4, 12])")
    bad = [a for a in aus if isinstance(a, bool) or not isinstance(a, int) or not 1 <= a <= 99]
    if bad:
        raise ValueError(f"aus must be AU numbers in 1..99, got {bad}")
    repeated = sorted({a for a in aus if aus.count(a) > 1})
    if repeated:
        raise ValueError(f"aus names AU {repeated} more than once")
    return aus


def au_classes(aus: Iterable[int]) -> tuple[str, ...]:
    """The class names of an AU set: ``(1, 12)`` -> ``("AU1", "AU12")``."""
    return tuple(au_name(a) for a in aus)


def au_targets(samples: Iterable[Sample], aus: Iterable[int]) -> np.ndarray:
    """Multi-hot AU targets: 1 where a sample's annotation codes the AU, else 0.

    Any side and any intensity count.

    Args:
        samples: N samples (their ``aus``; a sample without annotation gives a row of zeros).
        aus: the A AU numbers, in target order.

    Returns:
        (N, A) float32.
    """
    aus = tuple(aus)
    rows = [[float(a in s.au_numbers) for a in aus] for s in samples]
    return np.array(rows, dtype=np.float32).reshape(len(rows), len(aus))
