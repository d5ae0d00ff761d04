"""``moext predict --bundle DIR (--frames DIR | --video FILE)``: a trained model on a recording.

The bundle (:func:`moext.experiment.bundle.load_bundle`: a folder or a Hugging Face Hub
repository) says how its inputs are made; the recording (a folder of frames, or a video decoded
with PyAV) becomes a clip of the data layer (:mod:`moext.data.footage`) and goes the training
path: the face found on the onset and every frame cropped with that one transform, then the
method's DataModule (pairs, flow or clips, by the bundle's ``inputs``) makes the batch.
``--onset`` / ``--apex`` / ``--offset`` give the clip's frame numbers (a video's frames count
from 1); those not given are estimated and said to be: onset = the first frame, offset = the
last, apex = :data:`moext.data.footage.APEX_RULE`. ``--window N`` searches a long recording in
windows of N frames (every N / 2 frames) and predicts the strongest
(:func:`moext.data.footage.estimate_clip`).

It prints and writes (``--out FILE.json`` or ``.csv``) the class probabilities, the predicted
class, the frames used, what was estimated and how long each step took, and a PNG strip (onset,
apex, their difference; ``--strip``, default beside ``--out``).

Without ``--bundle``, ``moext predict --config ...`` is LightningCLI's predict of a held-out
subject (:mod:`moext.cli` routes it); ``moext predict --help`` says so.

A recording that cannot be predicted (no such file, a corrupt video, fewer than 2 frames, no
face on the onset) or a bundle whose inputs this moext cannot build is one line naming the
file, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from moext.data.footage import (
    APEX_RULE,
    Detector,
    Footage,
    Timing,
    decode_video,
    detector_for,
    estimate_clip,
    footage_batches,
    prepare_crops,
    read_frames,
    served_frames,
    write_strip,
)
from moext.data.pairs.datamodule import MERDataModule
from moext.experiment.bundle import BundleModel, load_bundle
from moext.experiment.errors import run_command
from moext.io import atomic_write_text, check_output

LIGHTNING_NOTE = (
    "Without --bundle, `moext predict --config CONFIG ...` is LightningCLI's predict of a held-out "
    "subject (data.init_args.fold), written as predictions.csv; `moext predict --config CONFIG "
    "--help` lists its options."
)


@dataclass
class Prediction:
    """What ``moext predict`` found for one recording.

    Attributes:
        source: the recording (video file or frame folder).
        frames: how many frames it has.
        timing: the clip predicted (onset, apex, offset; what was estimated).
        frames_used: the frame numbers the model's input is made of.
        probabilities: class -> probability.
        predicted: the most probable class.
        bundle: what the bundle is (kind, method, run, its LOSO estimate).
        seconds: time per step: ``load`` (the bundle, by the command), ``decode`` (the video,
            or listing the frames), ``detector`` (building the landmark detector), ``clip``
            (the face on the onset, the crops and, where estimated, the apex), ``inputs`` (the
            method's input: flow, clip), ``model``.
        strip: the PNG strip, if written.
        fps: the recording's frame rate (None: unknown).
    """

    source: str
    frames: int
    timing: Timing
    frames_used: list[int]
    probabilities: dict[str, float]
    predicted: str
    bundle: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    strip: str | None = None
    fps: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record of the prediction."""
        t = self.timing
        clip = {
            name: {"frame": getattr(t, name), "estimated": name in t.estimated}
            for name in ("onset", "apex", "offset")
        }
        if "apex" in t.estimated:
            clip["apex"] |= {"rule": APEX_RULE, "motion_px": t.motion}
        out = {
            "source": self.source,
            "frames": self.frames,
            "fps": self.fps,
            "clip": clip,
            "frames_used": self.frames_used,
            "predicted": self.predicted,
            "probabilities": self.probabilities,
            "bundle": self.bundle,
            "seconds": self.seconds,
            "strip": self.strip,
        }
        if t.windows:
            out["windows"] = [
                dict(zip(("onset", "apex", "offset", "motion_px", "strength_px"), w, strict=True))
                for w in t.windows
            ]
        return out

    def csv_row(self) -> dict[str, Any]:
        """One CSV row: the recording, the clip, what was estimated, the prediction."""
        t = self.timing
        row = {"source": self.source, "onset": t.onset, "apex": t.apex, "offset": t.offset}
        row["estimated"] = "+".join(t.estimated) or "none"
        row["predicted"] = self.predicted
        return row | {f"prob_{c}": p for c, p in self.probabilities.items()}


def bundle_summary(model: BundleModel) -> dict[str, Any]:
    """What a prediction says of its bundle: where, what, trained on what, its LOSO estimate."""
    m = model.manifest
    loso = m.get("loso") or {}
    overall, ci = loso.get("overall"), (loso.get("ci") or {}).get("overall")
    return {
        "source": model.source,
        "kind": model.kind,
        "members": len(model.members),
        "method": m["method"],
        "run": m["trained_on"]["run"],
        "loso_estimate": None
        if not overall
        else {k: overall[k] for k in ("uf1", "uar", "acc")} | ({"ci95": ci} if ci else {}),
    }


def read_footage(
    frames: str | Path | None, video: str | Path | None, workdir: Path, fps: float | None = None
) -> Footage:
    """The recording: a folder of frames, or a video decoded into ``workdir``.

    ``fps`` is its frame rate (default: a video's own, a folder's unknown).
    """
    if (frames is None) == (video is None):
        raise ValueError("give one recording: frames (a folder) or video (a file)")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"--fps {fps}: a frame rate is a finite number > 0")
    if frames is not None:
        return read_frames(frames, fps)
    return decode_video(video, workdir / "frames", fps)


def predict_footage(
    model: BundleModel,
    frames: str | Path | None = None,
    video: str | Path | None = None,
    onset: int | None = None,
    apex: int | None = None,
    offset: int | None = None,
    window: int | None = None,
    strip: str | Path | None = None,
    detector: Detector | None = None,
    fps: float | None = None,
) -> Prediction:
    """Predict one recording with a loaded bundle (the Python form of ``moext predict``).

    Args:
        model: the bundle (:func:`~moext.experiment.bundle.load_bundle`).
        frames: the recording as a folder of frames (or ``video``).
        video: the recording as a video file (or ``frames``).
        onset: the clip's onset frame number; estimated if not given.
        apex: the clip's apex frame number; estimated if not given.
        offset: the clip's offset frame number; estimated if not given.
        window: search windows of this many frames for the strongest segment.
        strip: where to write the PNG strip (None: not written).
        detector: the landmark detector of the bundle's crop settings (:func:`detector_for`),
            to share one between recordings; None builds it (about 1 s for dlib).
        fps: the recording's frame rate (default: a video's own; a folder's unknown), which
            a method with a temporal filter needs (phase magnification: AKMNet's paper
            configs).

    Raises:
        FootageError: the recording cannot be predicted (one line naming the file).
        ValueError: the bundle's DataModule is not one of the data layer's.
    """
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    dm = model.datamodule()
    if not isinstance(dm, MERDataModule):
        raise ValueError(
            f"{model.source}: its inputs {model.inputs!r} come from {type(dm).__name__}, which "
            "moext predict cannot build for a recording (not a MERDataModule)"
        )
    settings = dm.prepare_settings()
    with tempfile.TemporaryDirectory(prefix="moext-predict-") as work:
        workdir = Path(work)
        footage = read_footage(frames, video, workdir, fps)
        seconds["decode"] = time.perf_counter() - began
        began = time.perf_counter()
        cache = workdir / "cache"
        if detector is None:
            detector = detector_for(settings)
        seconds["detector"] = time.perf_counter() - began
        began = time.perf_counter()
        timing = estimate_clip(footage, cache, settings, detector, onset, apex, offset, window)
        sample = footage.sample(timing.onset, timing.apex, timing.offset)
        prepare_crops(footage, [sample], cache, settings, detector)
        seconds["clip"] = time.perf_counter() - began
        began = time.perf_counter()
        batches = footage_batches(dm, sample, model.classes, cache, model.device)
        seconds["inputs"] = time.perf_counter() - began
        began = time.perf_counter()
        probs = torch.cat([model.predict(b)["probs"] for b in batches])[0]
        seconds["model"] = time.perf_counter() - began
        if strip is not None:
            strip = str(write_strip(strip, sample, cache, settings))
        used = served_frames(dm, sample)
    probabilities = {c: float(p) for c, p in zip(model.classes, probs.tolist(), strict=True)}
    return Prediction(
        source=str(footage.source),
        frames=len(footage),
        timing=timing,
        frames_used=used,
        probabilities=probabilities,
        predicted=max(probabilities, key=probabilities.get),
        bundle=bundle_summary(model),
        seconds={k: round(v, 3) for k, v in seconds.items()},
        strip=strip,
        fps=footage.fps,
    )


def report_lines(p: Prediction) -> list[str]:
    """What ``moext predict`` prints."""
    t, b = p.timing, p.bundle
    estimate = b["loso_estimate"]
    quality = "no LOSO estimate"
    if estimate:
        quality = f"LOSO UF1 {estimate['uf1']:.3f}"
        if "ci95" in estimate:
            lo, hi = estimate["ci95"]["uf1"]
            quality += f" [{lo:.3f}, {hi:.3f}]"
    how = {
        "onset": "the first frame, not annotated",
        "offset": "the last frame, not annotated",
        "apex": f"estimated: {APEX_RULE}"
        + (f", {t.motion:.2f} px" if t.motion is not None else ""),
    }
    if t.windows:
        how = {
            "onset": f"the strongest of {len(t.windows)} windows",
            "offset": "its last frame",
            "apex": how["apex"],
        }

    def frame(name: str) -> str:
        value = getattr(t, name)
        return f"{name} {value}" + (f" ({how[name]})" if name in t.estimated else "")

    lines = [
        f"[predict] {p.source}: {p.frames} frames",
        "[predict] " + ", ".join(frame(n) for n in ("onset", "apex", "offset")),
        f"[predict] frames used: {', '.join(str(n) for n in p.frames_used)}",
        f"[predict] {b['method'].rsplit('.', 1)[-1]}, {b['kind']} bundle of {b['run']} "
        f"({quality}, the estimate of how well it does)",
    ]
    width = max(len(c) for c in p.probabilities)
    for c, prob in sorted(p.probabilities.items(), key=lambda item: -item[1]):
        mark = "  <- predicted" if c == p.predicted else ""
        lines.append(f"  {c:<{width}}  {prob:.4f}{mark}")
    spent = ", ".join(f"{k} {v:.2f} s" for k, v in p.seconds.items())
    lines.append(f"[predict] time: {spent}")
    return lines


def write_prediction(p: Prediction, path: str | Path) -> Path:
    """Write a prediction as JSON (``.json``) or one CSV row with a header (``.csv``)."""
    path = Path(path)
    if path.suffix == ".json":
        return atomic_write_text(path, json.dumps(p.as_dict(), indent=2, default=_plain))
    row = p.csv_row()
    text = ",".join(row) + "\n" + ",".join(_csv_cell(v) for v in row.values()) + "\n"
    return atomic_write_text(path, text)


def _plain(value: Any) -> Any:
    return asdict(value) if hasattr(value, "__dataclass_fields__") else str(value)


def _csv_cell(value: Any) -> str:
    text = str(value)
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


def parser() -> argparse.ArgumentParser:
    """The options of ``moext predict --bundle``."""
    p = argparse.ArgumentParser(
        prog="moext predict",
        description="Predict a recording (a folder of frames or a video) with a bundle written "
        "by `moext export`",
        epilog=LIGHTNING_NOTE,
    )
    p.add_argument("--bundle", required=True, help="bundle folder, or hf://owner/name (the Hub)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--frames", help="folder of frames (numbered by the last digits of their names)"
    )
    source.add_argument("--video", help="video file (decoded with PyAV; frames count from 1)")
    p.add_argument("--onset", type=int, help="onset frame number (default: the first frame)")
    p.add_argument("--apex", type=int, help="apex frame number (default: estimated, see below)")
    p.add_argument("--offset", type=int, help="offset frame number (default: the last frame)")
    p.add_argument(
        "--window",
        type=int,
        help="search windows of N frames (every N/2) and predict the strongest (long recordings)",
    )
    p.add_argument("--out", help="write the prediction: FILE.json or FILE.csv (+ FILE.png strip)")
    p.add_argument("--strip", help="the PNG strip: onset, apex, difference (default: beside --out)")
    p.add_argument(
        "--fps",
        type=float,
        help="the recording's frame rate (default: a video's own); needed by phase magnification",
    )
    p.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    return p


def wants_bundle(argv: list[str]) -> bool:
    """Whether ``moext predict ARGV`` is this command rather than LightningCLI's.

    It is with ``--bundle``, or help without ``--config``.
    """
    if any(a == "--bundle" or a.startswith("--bundle=") for a in argv):
        return True
    asks_help = any(a in ("-h", "--help") for a in argv)
    return asks_help and not any(a in ("-c", "--config") or a.startswith("--config=") for a in argv)


def _predict(a: argparse.Namespace) -> int:
    if a.out and Path(a.out).suffix not in (".json", ".csv"):
        raise ValueError(f"--out {a.out}: write .json or .csv")
    if a.strip and Path(a.strip).suffix.lower() != ".png":
        raise ValueError(f"--strip {a.strip}: the strip is a PNG image, write .png")
    strip = a.strip or (str(Path(a.out).with_suffix(".png")) if a.out else None)
    for option, target in (("--out", a.out), ("--strip", strip)):
        if target:
            check_output(option, target, folder=False)
    began = time.perf_counter()
    model = load_bundle(a.bundle, device=a.device)
    loaded = time.perf_counter() - began
    prediction = predict_footage(
        model, a.frames, a.video, a.onset, a.apex, a.offset, a.window, strip, fps=a.fps
    )
    prediction.seconds = {"load": round(loaded, 3), **prediction.seconds}
    for line in report_lines(prediction):
        print(line)
    written = [write_prediction(prediction, a.out)] if a.out else []
    written += [Path(strip)] if strip else []
    if written:
        print(f"[predict] wrote {', '.join(str(w) for w in written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``moext predict --bundle``: a trained model's prediction of a recording.

    ``moext predict --bundle DIR (--frames DIR | --video FILE) [--onset N --apex N --offset
    N] [--window N] [--out FILE.json|.csv] [--strip PNG]``.
    """
    a = parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_command("moext predict", lambda: _predict(a))
