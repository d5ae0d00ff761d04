"""Optical-flow analysis of the pseudo apex (the paper's Figure 6).

For every macro-expression clip, the TV-L1 optical flow (scikit-image's
:func:`~skimage.registration.optical_flow_tvl1`) "between the 1st and each frame" (the paper's
words): from its 1st frame (the onset) to its frame t, t = 2..max_frames, frames counted from
the onset as the 1st, the numbering of ``pseudo_apex_n`` (:meth:`moext.data.records.Sample.
pseudo_apex`), so the N found here is the value to put there. For every micro-expression clip,
the flow from its onset to its apex. Each flow is summarised by two numbers (:func:`flow_stats`):

- **magnitude**: the mean over all pixels of the aligned face crop of ``|flow|`` (pixels of the
  crop). No face mask: the crops are already tight face crops, and static background adds the
  same small noise floor to macro and micro flows alike.
- **angle**: the direction of the mean flow vector, in degrees in (-180, 180], counter-clockwise
  from the image's +x axis with y pointing *up* (90 = upward motion). Random noise vectors
  cancel in the mean, so this is the dominant direction of the motion.

Per t, the macro profile averages the clips' magnitudes (with their standard deviation) and takes
the circular mean of their angles. The pseudo apex N is the t whose mean macro magnitude is
closest to the mean micro onset -> apex magnitude (:func:`best_frame`; the paper found N = 5).

``moext flow-analysis --config X.yaml [--out DIR] [--size 128] [--max-frames 16]
[--max-clips K] [-- overrides]`` runs it on the clips of a pretraining config's data section and
writes ``flow_by_frame.csv`` and ``flow_by_frame.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from moext.data.faces import align_clip, make_detector
from moext.data.flow.tvl1 import mean_flow
from moext.data.images import read_rgb
from moext.data.records import Sample
from moext.experiment.config import datamodule_from_config, split_overrides
from moext.io import atomic_write

#: Crops the frames of a clip: frame files (onset first) -> (T, size, size, 3) uint8 RGB.
Cropper = Callable[[Sequence[Path]], np.ndarray]

CSV_NAME = "flow_by_frame.csv"
PNG_NAME = "flow_by_frame.png"


def circular_mean(degrees: Iterable[float]) -> float:
    """Circular mean of angles in degrees, in (-180, 180]; NaN when there are none."""
    radians = np.radians(np.asarray(list(degrees), dtype=np.float64))
    if radians.size == 0:
        return float("nan")
    return float(np.degrees(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean())))


#: The first frame t a profile reports: frames are counted from the onset as the 1st, and the
#: flow from the 1st frame to itself is zero.
FIRST_T = 2


def clip_profile(clip: np.ndarray, max_frames: int) -> list[tuple[float, float]]:
    """Flow from the 1st frame of a clip (the onset) to each of its frames t = 2..max_frames.

    Args:
        clip: (T, H, W) or (T, H, W, 3) uint8, onset first (``clip[t - 1]`` is frame t).
        max_frames: the last frame t (counting the onset as the 1st).

    Returns:
        (magnitude, angle) for t = 2..min(max_frames, T), in order.
    """
    last = min(max_frames, len(clip))
    return [mean_flow(clip[0], clip[t - 1]) for t in range(FIRST_T, last + 1)]


def summarise(per_clip: Sequence[Sequence[tuple[float, float]]]) -> pd.DataFrame:
    """Per-t summary of per-clip profiles (clips may be of different lengths).

    Args:
        per_clip: for each clip, (magnitude, angle) for frames t = 2, 3, ... (:func:`clip_profile`).

    Returns:
        Columns ``t`` (the frame, from 2; the onset is frame 1), ``magnitude`` (mean over
        clips), ``magnitude_std`` (population std), ``angle`` (circular mean, degrees) and
        ``clips`` (how many clips reach that t).
    """
    rows = []
    for i in range(max((len(p) for p in per_clip), default=0)):
        t = FIRST_T + i
        values = [p[i] for p in per_clip if len(p) > i]
        magnitudes = np.array([m for m, _ in values])
        rows.append(
            {
                "t": t,
                "magnitude": magnitudes.mean(),
                "magnitude_std": magnitudes.std(),
                "angle": circular_mean(a for _, a in values),
                "clips": len(values),
            }
        )
    return pd.DataFrame(rows, columns=["t", "magnitude", "magnitude_std", "angle", "clips"])


def macro_profile(clips: Iterable[np.ndarray], max_frames: int = 16) -> pd.DataFrame:
    """Mean flow from the onset (frame 1) to frame t of macro clips (Figure 6's macro curves).

    Args:
        clips: (T, H, W[, 3]) uint8 aligned clips, onset first.
        max_frames: the last frame t (counting the onset as the 1st).

    Returns:
        One row per t = 2..max_frames (fewer if every clip is shorter); see :func:`summarise`.
    """
    return summarise([clip_profile(clip, max_frames) for clip in clips])


def best_frame(profile: pd.DataFrame, micro_magnitude: float) -> int:
    """The t whose mean macro magnitude is closest to the micro onset -> apex magnitude.

    Args:
        profile: a :func:`macro_profile` table (columns ``t``, ``magnitude``).
        micro_magnitude: mean micro onset -> apex flow magnitude.

    Returns:
        N, the pseudo apex: a frame t counting the onset as the 1st, the numbering of
        ``pseudo_apex_n`` (the smaller t on a tie).
    """
    if profile.empty:
        raise ValueError("empty macro profile: no macro clip has a frame after its onset")
    distance = (profile["magnitude"] - micro_magnitude).abs().to_numpy()
    return int(profile["t"].to_numpy()[int(np.argmin(distance))])


@dataclass
class FlowAnalysis:
    """Result of :func:`analyse`.

    Attributes:
        macro: the macro profile, one row per t (see :func:`summarise`).
        micro_magnitude: mean over micro clips of the onset -> apex mean flow magnitude (pixels).
        micro_std: its standard deviation over the micro clips.
        micro_angle: circular mean over micro clips of the onset -> apex flow angle (degrees).
        micro_clips: number of micro clips.
        best_n: the t of ``macro`` closest to ``micro_magnitude`` (:func:`best_frame`), in
            the numbering of ``pseudo_apex_n`` (the onset is frame 1).
    """

    macro: pd.DataFrame
    micro_magnitude: float
    micro_std: float
    micro_angle: float
    micro_clips: int
    best_n: int

    def table(self) -> pd.DataFrame:
        """The CSV table: one ``macro`` row per t, then one ``micro`` row (t empty).

        Columns ``kind``, ``t``, ``magnitude``, ``magnitude_std``, ``angle``, ``clips``, ``best``
        (True on the macro row of the chosen N).
        """
        macro = self.macro.assign(kind="macro", best=self.macro["t"] == self.best_n)
        micro = pd.DataFrame(
            [
                {
                    "kind": "micro",
                    "t": pd.NA,
                    "magnitude": self.micro_magnitude,
                    "magnitude_std": self.micro_std,
                    "angle": self.micro_angle,
                    "clips": self.micro_clips,
                    "best": False,
                }
            ]
        )
        table = pd.concat([macro, micro], ignore_index=True)
        table["t"] = table["t"].astype("Int64")
        return table[["kind", "t", "magnitude", "magnitude_std", "angle", "clips", "best"]]


def spread(samples: Sequence[Sample], k: int | None) -> list[Sample]:
    """At most ``k`` samples, evenly spread over the list (all of them when ``k`` is None)."""
    if k is None or len(samples) <= k:
        return list(samples)
    return [samples[i] for i in np.linspace(0, len(samples) - 1, k).round().astype(int)]


def analyse(
    samples: Sequence[Sample],
    crop: Cropper,
    max_frames: int = 16,
    max_clips: int | None = None,
    progress: bool = True,
) -> FlowAnalysis:
    """Figure 6 on sample records: macro onset -> frame t profile against micro onset -> apex.

    Args:
        samples: micro and macro clips (e.g. a pretraining DataModule's ``read_samples()``).
        crop: frame files of a clip (onset first) -> (T, size, size, 3) uint8 aligned crops,
            one crop for the whole clip (see :func:`make_cropper`).
        max_frames: the last frame t of a macro clip (counting its onset as the 1st).
        max_clips: at most this many clips of each kind, evenly spread (None: all).
        progress: show a tqdm progress bar over clips.

    Returns:
        The macro profile, the micro reference and the chosen N.
    """
    micro = spread([s for s in samples if s.kind == "micro"], max_clips)
    macro = spread([s for s in samples if s.kind == "macro"], max_clips)
    if not micro or not macro:
        raise ValueError(
            f"need micro and macro clips, got {len(micro)} micro and {len(macro)} macro "
            "(use a pretraining config with macro: true and a database with macro clips)"
        )
    micro_flows: list[tuple[float, float]] = []
    macro_flows: list[list[tuple[float, float]]] = []
    with tqdm(
        total=len(micro) + len(macro), desc="optical flow", unit="clip", disable=not progress
    ) as bar:
        for s in micro:
            onset, apex = crop([s.onset_path, s.apex_path])
            micro_flows.append(mean_flow(onset, apex))
            bar.update()
        for s in macro:
            start = s.frame_numbers.index(s.onset)
            macro_flows.append(clip_profile(crop(s.frames[start : start + max_frames]), max_frames))
            bar.update()
    profile = summarise(macro_flows)
    magnitudes = np.array([m for m, _ in micro_flows])
    return FlowAnalysis(
        macro=profile,
        micro_magnitude=float(magnitudes.mean()),
        micro_std=float(magnitudes.std()),
        micro_angle=circular_mean(a for _, a in micro_flows),
        micro_clips=len(micro_flows),
        best_n=best_frame(profile, float(magnitudes.mean())),
    )


def make_cropper(
    backend: str,
    size: int,
    weights: str | None = None,
    on_no_face: str = "error",
    device: str = "cpu",
) -> Cropper:
    """The clip cropper of a landmark backend.

    Args:
        backend: ``"dlib"`` or ``"fan"``: :func:`~moext.data.faces.align_clip` (one crop per clip,
            found on its first frame); ``"none"``: the frames are already aligned crops, only
            resized to ``size``.
        size: side of the square crops.
        weights: local landmark model file (backend default when None).
        on_no_face: ``"error"`` or ``"next"``, see :func:`~moext.data.faces.align_clip`.
        device: torch device of the ``"fan"`` backend.
    """
    if backend == "none":

        def resize(paths: Sequence[Path]) -> np.ndarray:
            return np.stack(
                [cv2.resize(read_rgb(p), (size, size), interpolation=cv2.INTER_AREA) for p in paths]
            )

        return resize
    detector = make_detector(backend, weights, device)
    return lambda paths: align_clip(paths, detector, size, on_no_face=on_no_face)


def _panel(ax: Any, result: FlowAnalysis, quantity: str, micro: float, ylabel: str) -> None:
    """One panel of Figure 6: the macro profile of ``quantity`` against t.

    With its std where the table has one; the micro level and the chosen N marked.
    """
    macro = result.macro
    spread = macro.get(f"{quantity}_std")
    ax.errorbar(
        macro["t"],
        macro[quantity],
        yerr=spread,
        marker="o",
        capsize=3 if spread is not None else 0,
        label="macro: frame 1 (onset) -> frame t",
    )
    ax.axhline(micro, color="tab:red", linestyle="--", label="micro: onset -> apex")
    ax.axvline(result.best_n, color="tab:green", linestyle=":", label=f"N = {result.best_n}")
    ax.set(xlabel="frame t (the onset is frame 1)", ylabel=ylabel, title=quantity)
    ax.legend(fontsize="small")


def plot(result: FlowAnalysis, path: Path) -> None:
    """Figure 6: macro magnitude vs t (micro level and N marked), and macro angle vs t."""
    # lazy: plotting only (matplotlib is slow to import)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax_m, ax_a = fig.subplots(1, 2)
    _panel(ax_m, result, "magnitude", result.micro_magnitude, "mean flow magnitude (px)")
    _panel(ax_a, result, "angle", result.micro_angle, "mean flow angle (deg, 90 = up)")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def write_results(result: FlowAnalysis, out: Path) -> tuple[Path, Path]:
    """Writes ``flow_by_frame.csv`` and ``flow_by_frame.png`` into ``out`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    csv, png = out / CSV_NAME, out / PNG_NAME
    atomic_write(csv, lambda tmp: result.table().to_csv(tmp, index=False, float_format="%.5f"))
    plot(result, png)
    return csv, png


def report(result: FlowAnalysis) -> str:
    """The result as text: the macro profile and the chosen N against the micro level."""
    macro = result.macro.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    chosen = result.macro.set_index("t").loc[result.best_n]
    return (
        f"{macro}\n"
        f"micro onset -> apex: magnitude {result.micro_magnitude:.4f} +- {result.micro_std:.4f} px, "
        f"angle {result.micro_angle:.1f} deg ({result.micro_clips} clips)\n"
        f"pseudo apex N = {result.best_n} (frame {result.best_n} counting the onset as the 1st; "
        f"macro magnitude {chosen['magnitude']:.4f} px; paper: N = 5; set it as "
        "data.init_args.pseudo_apex_n)"
    )


def main(argv: list[str] | None = None) -> int:
    """``moext flow-analysis``: the flow analysis of the pseudo apex (Figure 6).

    ``moext flow-analysis --config X.yaml [--out DIR] [--size 128] [--max-frames 16]
    [--max-clips K] [-- overrides]``.
    """
    argv, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        prog="moext flow-analysis",
        description="Optical flow of macro clips vs micro onset->apex: the pseudo apex N (Figure 6).",
        epilog="Arguments after -- override the config (e.g. -- --data.init_args.root /data).",
    )
    parser.add_argument("--config", required=True, help="a pretraining `moext fit` config")
    parser.add_argument("--out", type=Path, default=Path("flow-analysis"), help="output folder")
    parser.add_argument("--size", type=int, default=128, help="side of the aligned crops")
    parser.add_argument(
        "--max-frames", type=int, default=16, help="last frame t (the onset is frame 1)"
    )
    parser.add_argument("--max-clips", type=int, default=None, help="at most K clips of each kind")
    parser.add_argument("--device", default="cpu", help="torch device of the fan backend")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    dm = datamodule_from_config(args.config, overrides)
    samples, _, _ = dm.read_samples()
    crop = make_cropper(dm.landmarks, args.size, dm.landmark_weights, dm.on_no_face, args.device)
    result = analyse(samples, crop, args.max_frames, args.max_clips)
    csv, png = write_results(result, args.out)
    print(report(result))
    print(f"wrote {csv} and {png} in {time.perf_counter() - started:.1f} s")
    return 0
