"""Motion magnification benchmark: speed and fidelity of :mod:`moext.data.magnify`.

* **Speed** (always): frames per second of :func:`~moext.data.magnify.magnify_phase` (both
  temporal filters, the default settings otherwise) and :func:`~moext.data.magnify.
  magnify_linear` on a random grey clip of ``--frames`` frames at each of ``--sizes``, on
  ``--device``; the best of ``--repeats`` timed runs after one warm-up run. On a GPU the runs
  are timed with CUDA events. Also frames per CPU second (the process's CPU time, all threads):
  on a shared machine, with one thread, the throughput of one core whatever the load.
* **Fidelity** (``--fidelity``): how much of ``1 + alpha`` the methods deliver on generated
  faces, and how much sensor noise they let through. One subject's neutral face of
  :mod:`moext.data.synth` is moved by each emotion's motion field along the micro profile
  (``--amplitude`` pixels at the apex, no noise, ``--fps``); the displacement ``s`` of the
  magnified apex frame relative to the magnified onset frame is fitted by least squares (the
  face moved by ``s`` times the field, over the moving region) and reported as
  ``s / ((1 + alpha) a_apex)``. Noise: a static face plus Gaussian noise of 1 grey level; the
  RMS of output minus face, in grey levels.
* **Figure** (``--figure PATH``): a y-t slice through the moving lip corner of a generated
  happiness clip (``moext.data.synth.generate``: JPEG frames with sensor noise), before and
  after linear and phase magnification, as a PNG.

Run from the repository root::

    python -m benchmarks.magnify                            # speed at 128 and 224 px, CPU
    python -m benchmarks.magnify --device cuda --frames 256 --json bench/magnify_cuda.json
    python -m benchmarks.magnify --fidelity --figure docs/magnification.png
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.common import (
    Column,
    DeviceTimer,
    describe_machine,
    machine_info,
    markdown_table,
    resolve_device,
    write_json,
)
from moext.data import synth
from moext.data.magnify import LUMA, MagnifySettings, magnify_linear, magnify_phase
from moext.io import atomic_write


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.magnify", description=__doc__)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--sizes", default="128,224", help="frame sides, comma-separated")
    p.add_argument("--frames", type=int, default=64, help="frames per clip")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (the best counts)")
    p.add_argument("--alpha", type=float, default=15.0)
    p.add_argument("--fps", type=float, default=200.0, help="frame rate of the clips")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--fidelity", action="store_true", help="also measure gain and noise")
    p.add_argument("--fidelity-size", type=int, default=128)
    p.add_argument("--fidelity-frames", type=int, default=60)
    p.add_argument("--amplitude", type=float, default=0.2, help="apex displacement, pixels")
    p.add_argument("--fidelity-alpha", type=float, default=10.0)
    p.add_argument("--figure", type=Path, default=None, help="write the y-t slice PNG here")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


# --- speed ---------------------------------------------------------------------------------------


def measure_speed(a: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """frames/s of each method at each size (best of ``a.repeats`` after a warm-up)."""
    defaults = MagnifySettings()
    ways = {
        "phase, butter": lambda x: magnify_phase(
            x, a.alpha, defaults.low, defaults.high, a.fps, temporal="butter"
        ),
        "phase, ideal": lambda x: magnify_phase(
            x, a.alpha, defaults.low, defaults.high, a.fps, temporal="ideal"
        ),
        "linear": lambda x: magnify_linear(x, a.alpha),
    }
    rows = []
    timer = DeviceTimer(device)
    g = torch.Generator().manual_seed(0)
    for size in [int(s) for s in a.sizes.split(",") if s.strip()]:
        clip = torch.rand(a.frames, size, size, generator=g).to(device)
        for name, run in ways.items():
            run(clip)  # warm-up
            best, cpu = float("inf"), float("inf")
            for _ in range(a.repeats):
                started = time.process_time()
                timer.start()
                run(clip)
                best = min(best, timer.stop())
                cpu = min(cpu, time.process_time() - started)
            rows.append(
                {
                    "method": name,
                    "size": size,
                    "frames": a.frames,
                    "seconds": best,
                    "frames_per_s": a.frames / best,
                    "frames_per_cpu_s": a.frames / max(cpu, 1e-9),
                }
            )
    return rows


# --- fidelity ------------------------------------------------------------------------------------


#: The generator's own warp (``image`` moved by ``field`` (H, W, 2) pixels): the clips are made
#: and the displacements fitted with exactly the motion model of the generated database.
displace = synth._displace


def fitted_displacement(
    frame: np.ndarray, face: np.ndarray, field: np.ndarray, region: np.ndarray
) -> float:
    """The s that makes ``face`` moved by ``s * field`` closest to ``frame`` over ``region``
    (grid of 0.1 px steps in [-2, 8] of the field's unit, refined by a parabola)."""
    steps = np.linspace(-2, 8, 101)
    errors = [float(((displace(face, s * field) - frame)[region] ** 2).mean()) for s in steps]
    i = int(np.argmin(errors))
    if 0 < i < len(steps) - 1:
        left, mid, right = errors[i - 1 : i + 2]
        curvature = left - 2 * mid + right
        if curvature > 0:
            return float(steps[i] + 0.5 * (steps[1] - steps[0]) * (left - right) / curvature)
    return float(steps[i])


def measure_fidelity(a: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Effective magnification (per emotion) and noise of linear and phase magnification."""
    size, frames, alpha = a.fidelity_size, a.fidelity_frames, a.fidelity_alpha
    base, landmarks = synth.make_subject(1, 0, size)
    face = (base @ np.asarray(LUMA, np.float32)) / 255
    profile = synth.micro_profile(frames) * a.amplitude
    apex = synth.micro_apex_index(frames)
    d = MagnifySettings()
    ways: dict[str, Any] = {"linear": lambda x: magnify_linear(x, alpha)}
    for temporal, sigma in itertools.product(("butter", "ideal"), (0.0, 1.0, 2.0)):
        ways[f"phase, {temporal}, sigma {sigma:g}"] = lambda x, t=temporal, s=sigma: magnify_phase(
            x, alpha, d.low, d.high, a.fps, temporal=t, sigma=s
        )
    rows: dict[str, dict[str, Any]] = {name: {"method": name} for name in ways}
    for emotion in synth.EMOTIONS:
        field = synth.motion_field(landmarks, emotion, (size, size))
        strength = np.linalg.norm(field, axis=-1)
        region = strength > 0.2 * strength.max()
        clip = np.stack([displace(face, p * field) for p in profile])
        x = torch.from_numpy(clip).to(device)
        for name, run in ways.items():
            out = run(x).cpu().numpy()
            moved = fitted_displacement(out[apex], face, field, region) - fitted_displacement(
                out[0], face, field, region
            )
            rows[name][emotion] = moved / ((1 + alpha) * profile[apex])
    g = torch.Generator().manual_seed(0)
    still = torch.from_numpy(face)
    noisy = still + torch.randn(frames, size, size, generator=g) / 255
    for name, run in ways.items():
        out = run(noisy.to(device)).cpu()
        rows[name]["noise_rms"] = float((out - still).pow(2).mean().sqrt() * 255)
    return list(rows.values())


# --- figure --------------------------------------------------------------------------------------


def write_figure(path: Path, a: argparse.Namespace) -> dict[str, Any]:
    """A y-t slice through the left lip corner of a generated happiness clip, before and after
    magnification (linear and phase, alpha ``a.alpha``)."""
    # lazy: matplotlib only for the figure
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size, frames, amplitude = 128, 40, 0.3
    with tempfile.TemporaryDirectory() as tmp:
        root = synth.generate(
            Path(tmp) / "synth",
            subjects=1,
            clips_per_class=1,
            macro_clips_per_class=1,
            frames=frames,
            size=size,
            micro_amplitude=amplitude,
        )
        folder = root / synth.FRAMES_DIR / "sub01" / "EP02_01f"  # the happiness micro clip
        paths = sorted(folder.glob("img*.jpg"), key=lambda p: int(p.stem[3:]))
        grey = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])
    clip = torch.from_numpy(grey).float() / 255
    d = MagnifySettings(alpha=a.alpha)
    panels = {
        "input": clip,
        f"linear, alpha {a.alpha:g}": magnify_linear(clip, a.alpha),
        f"phase, alpha {a.alpha:g}": magnify_phase(clip, a.alpha, d.low, d.high, a.fps),
    }
    _, landmarks = synth.make_subject(1, 0, size)
    x, y = np.rint(landmarks[48]).astype(int)  # the left lip corner
    rows = slice(max(0, y - 16), min(size, y + 16))
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5, 2.6), sharey=True)
    for ax, (title, video) in zip(axes, panels.items(), strict=True):
        extent = (-0.5, len(video) - 0.5, rows.stop - 0.5, rows.start - 0.5)
        ax.imshow(
            video[:, rows, x].T.numpy(), cmap="gray", vmin=0, vmax=1, aspect="auto", extent=extent
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("frame (onset = 0)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(f"row (column {x}, lip corner)", fontsize=8)
    fig.suptitle(
        f"Generated happiness clip: {frames} frames, lip corner up {amplitude} px at the apex "
        f"(frame {synth.micro_apex_index(frames)}); phase: default settings at {a.fps:g} fps",
        fontsize=8,
    )
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return {"path": str(path), "bytes": path.stat().st_size, "column": int(x)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints tables and returns (and optionally writes) the results."""
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    info = machine_info(device)
    out: dict[str, Any] = {
        "benchmark": "magnify",
        "argv": sys.argv[1:] if argv is None else argv,
        "device": str(device),
        "machine": info,
    }
    out["speed"] = measure_speed(a, device)
    print(f"\nmagnification speed, {a.frames} frames, device {device}; {describe_machine(info)}")
    print(
        markdown_table(
            out["speed"],
            [
                Column("method", "method"),
                Column("size", "size (px)"),
                Column("frames_per_s", "frames/s", "{:.0f}"),
                Column("frames_per_cpu_s", "frames per CPU second", "{:.0f}"),
                Column("seconds", "s per clip", "{:.3f}"),
            ],
        )
    )
    if a.fidelity:
        out["fidelity"] = measure_fidelity(a, device)
        print(
            f"\nshare of 1 + alpha delivered at the apex (alpha {a.fidelity_alpha:g}, "
            f"{a.amplitude} px, {a.fidelity_size} px faces, {a.fidelity_frames} frames at "
            f"{a.fps:g} fps) and output noise for 1 grey level of input noise"
        )
        print(
            markdown_table(
                out["fidelity"],
                [Column("method", "method")]
                + [Column(e, e, "{:.2f}") for e in synth.EMOTIONS]
                + [Column("noise_rms", "noise RMS (grey levels)", "{:.1f}")],
            )
        )
    if a.figure is not None:
        out["figure"] = write_figure(a.figure, a)
        print(f"\nfigure: {out['figure']['path']} ({out['figure']['bytes'] / 1024:.0f} KB)")
    write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
