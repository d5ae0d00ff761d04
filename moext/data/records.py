"""The one sample record type that every database reader produces.

Data flows one way: spreadsheet + frames -> :class:`Sample` records -> aligned crops (cache) ->
onset/apex pairs -> DataModule. Nothing here touches pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["micro", "macro"]
Side = Literal["L", "R"]


@dataclass(frozen=True, order=True)
class ActionUnit:
    """One coded facial action unit (FACS), normalised from a database's notation.

    See :func:`moext.data.readers.aus.parse_aus`.

    Attributes:
        number: the AU number (``12`` for ``AU12``, ``R12``, ``12B``).
        side: ``"L"`` or ``"R"`` for a unilateral action (``L10``, ``R14A``), else None.
        intensity: the FACS intensity letter ``"A"`` (trace) to ``"E"`` (maximum) where the
            database codes it (SAMM's ``R14A``), else None.
    """

    number: int
    side: Side | None = None
    intensity: str | None = None

    def __str__(self) -> str:
        """The FACS spelling: side, number, intensity (``R14A``, ``L10``, ``12``)."""
        return f"{self.side or ''}{self.number}{self.intensity or ''}"


@dataclass(frozen=True)
class Sample:
    """One annotated clip of one database.

    Attributes:
        dataset: database key: ``"casme"``, ``"casme2"``, ``"samm"``, ``"smic"``, ``"casme3"``,
            ``"mmew"``, ``"4dme"`` (or ``"synth"``).
        subject: the subject id as the database spells it in its own folders
            (``"sub01"``, ``"006"``, ``"s1"``, ``"spNO.1"``; MMEW's and 4DME's subject cells, whose
            folders do not name the subject or name it as the cell does). LOSO folds are built on
            it.
        clip: clip id, unique within ``dataset`` (``"EP02_01f"``, ``"006_1_2"``, ``"s1_ne_01"``,
            ``"spNO.1_a_0"`` for a CAS(ME)^3 clip cut from a longer video).
        frames: every frame file of the clip's folder, sorted by frame number (never as strings).
        frame_numbers: the frame number of each entry of ``frames`` (same length).
        onset: frame number of the onset frame (an element of ``frame_numbers``).
        apex: frame number of the apex frame. For macro clips this is the annotated apex; the
            pseudo apex (the clip's N-th frame, counting the onset as the 1st) is chosen later,
            see :meth:`pseudo_apex`.
        offset: frame number of the offset frame, or ``None`` when not annotated / unusable.
        emotion: the emotion label as the database spells it, lower-cased and stripped
            (``"happiness"``, ``"others"``, ``"negative"`` for SMIC folders), or ``None``.
        kind: ``"micro"`` or ``"macro"``.
        source: where the record came from, for error messages (``"file.xlsx row 17"``).
        action_units: the AU string as annotated, or ``""``.
        aus: the action units of ``action_units``, normalised (:class:`ActionUnit`, in the
            order coded); ``None`` when the clip has no AU annotation (a blank or ``?`` cell,
            or a database without AU coding such as SMIC); ``()`` when its annotation codes no
            AU present (4DME's only AU marked ``(k)``).
        fps: the clip's own frame rate where its recording states one (a video to predict:
            :mod:`moext.data.footage`); None: its database's
            (:data:`moext.data.readers.FRAME_RATES`).
    """

    dataset: str
    subject: str
    clip: str
    frames: tuple[Path, ...]
    frame_numbers: tuple[int, ...]
    onset: int
    apex: int
    offset: int | None = None
    emotion: str | None = None
    kind: Kind = "micro"
    source: str = ""
    action_units: str = ""
    aus: tuple[ActionUnit, ...] | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)
    fps: float | None = None

    @property
    def id(self) -> str:
        """Globally unique sample id: ``"{dataset}/{subject}/{clip}"``."""
        return f"{self.dataset}/{self.subject}/{self.clip}"

    @property
    def au_numbers(self) -> frozenset[int]:
        """The numbers of the action units coded present (empty when not annotated)."""
        return frozenset(au.number for au in self.aus or ())

    def frame_path(self, frame_number: int) -> Path:
        """The file of one frame, by frame number."""
        try:
            return self.frames[self.frame_numbers.index(frame_number)]
        except ValueError:
            raise KeyError(f"{self.id}: no frame number {frame_number} in {self.source}") from None

    @property
    def onset_path(self) -> Path:
        """The onset's frame file."""
        return self.frame_path(self.onset)

    @property
    def apex_path(self) -> Path:
        """The apex's frame file."""
        return self.frame_path(self.apex)

    def pseudo_apex(self, n: int) -> int:
        """Frame number of the clip's ``n``-th frame, counting the onset as the 1st.

        The paper's pseudo apex (N = 5: the onset and 4 frames later; as its Fig. 6 counts flow
        "between the 1st and each frame").

        For a clip whose onset is ``img46.jpg`` and whose frames are consecutive, ``n = 5``
        gives frame 50. Counted in frames present on disk, so gaps in numbering do not shift
        it. Clamped to the clip's last frame when the clip has fewer than ``n`` frames from its
        onset.

        Raises:
            ValueError: ``n < 2`` (the 1st frame is the onset itself: no motion).
        """
        if n < 2:
            raise ValueError(
                f"{self.id}: pseudo_apex_n must be >= 2 (the clip's n-th frame counting the "
                f"onset as the 1st; 1 would be the onset itself), got {n}"
            )
        i = self.frame_numbers.index(self.onset)
        return self.frame_numbers[min(i + n - 1, len(self.frame_numbers) - 1)]


@dataclass(frozen=True)
class Rejection:
    """A row a reader could not use, with the reason. Never dropped silently: reported."""

    clip: str
    reason: str
    source: str = ""


@dataclass(frozen=True)
class Correction:
    """A row a reader used after fixing a known quirk (e.g. apex == onset), with what it did."""

    clip: str
    reason: str
    source: str = ""


@dataclass
class ReadResult:
    """What a reader returns: the usable samples and the report of everything else."""

    samples: list[Sample]
    rejected: list[Rejection] = field(default_factory=list)
    corrected: list[Correction] = field(default_factory=list)

    def extend(self, other: ReadResult) -> None:
        """Add another result's samples, rejections and corrections to this one."""
        self.samples.extend(other.samples)
        self.rejected.extend(other.rejected)
        self.corrected.extend(other.corrected)


class DatasetError(Exception):
    """A database cannot be read at all (wrong root, missing spreadsheet, renamed column).

    The message names the file or folder that was expected and what was wrong with it.
    """
