"""A small generated micro-expression database in the CASME II layout.

The real databases are licensed and cannot ship, so demos, tests and CI run on this one. It is
made from one real face photo (``skimage.data.astronaut()``):

- **Subjects**: the face crop with a per-subject identity change: scale, small shift, a small
  smooth random shape warp, colour gains, gamma and an illumination ramp.
- **Micro clips** (``CASME2-coding-20190701.xlsx``): three classes whose *only* difference is a
  small, local, landmark-driven motion: happiness (AU12, lip corners up and out), disgust
  (AU4+9, inner brows down and together, a slight nose wrinkle) and surprise (AU1+2, brows up).
  The motion is a smooth displacement field (Gaussian RBF interpolation of landmark
  displacements, :func:`motion_field`) applied with ``cv2.remap``, ``micro_amplitude`` pixels at
  the moving landmarks at the apex, with a smooth onset -> apex -> offset profile
  (:func:`micro_profile`).
- **Macro clips** (``macro-coding.xlsx``, same columns, same frame tree): the same motions, larger
  (``macro_amplitude`` at the apex). Their rise is built so that the displacement of the clip's
  ``PSEUDO_APEX_N``-th frame (N = 5, counting the onset as the 1st, as
  :meth:`moext.data.records.Sample.pseudo_apex` and the flow analysis count) equals the micro
  apex displacement (:func:`macro_profile`): the macro clip's frame N is, up to sensor noise, the
  same image as the micro apex frame of the same subject and class, so an optical-flow analysis
  (or the paper's rule) finds N = 5.
- **Action units**: every clip's ``Action Units`` cell codes the AUs of its motion, as CASME II
  writes them (:data:`CODING`): happiness ``12``, disgust ``4+9``, surprise ``1+2``. With
  ``mixed_clips`` > 0 each subject also gets clips of two actions at once (:data:`MIXES`: lip
  corners with brows up ``1+2+12``, lip corners with brows down ``4+9+12``), the sum of the two
  displacement fields, labelled ``others`` (left out by ``synth-3``): their AUs are not one
  emotion's, so an AU detector cannot get them by recognising the emotion.
- Mild Gaussian sensor noise on every frame; JPEG quality 95.

Frame numbers start at 46 in half of the clips and just below 100 in the others, so that numbering
crosses 99 -> 100 and readers must sort numerically. Frames are written first and the
spreadsheets last (temp file + ``os.replace``), so an interrupted run never leaves a spreadsheet
that points at missing frames.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from moext.io import atomic_write

#: The macro-expression pseudo apex: the clip's N-th frame counting the onset as the 1st, i.e.
#: index N - 1 from the onset (paper: N = 5).
PSEUDO_APEX_N = 5

EMOTIONS = ("happiness", "disgust", "surprise")
MICRO_SHEET = "CASME2-coding-20190701.xlsx"
MACRO_SHEET = "macro-coding.xlsx"
FRAMES_DIR = "CASME2_RAW_selected"
COLUMNS = (
    "Subject",
    "Filename",
    None,
    "OnsetFrame",
    "ApexFrame",
    "OffsetFrame",
    None,
    "Action Units",
    "Estimated Emotion",
    "Objective Classes",
)

#: Per emotion: CASME II style AU string, objective class, episode number of micro / macro clips.
CODING = {
    "happiness": ("12", 1, 2, 12),
    "disgust": ("4+9", 4, 3, 13),
    "surprise": ("1+2", 2, 4, 14),
}

#: Clips of two actions at once (``mixed_clips``): emotion label -> (the actions, their AU
#: string, objective class, episode number).
MIXES = {
    "others": (
        (("happiness", "surprise"), "1+2+12", 7, 5),
        (("happiness", "disgust"), "4+9+12", 7, 6),
    ),
}

#: Per emotion: moving landmarks (0-based, 68-point layout) as (index, outward, down, magnitude):
#: a unit direction in face terms (outward = away from the nose line; down = image +y) and the
#: displacement at the landmark per unit amplitude.
MOTIONS = {
    "happiness": [(48, 0.6, -0.8, 1.0), (54, 0.6, -0.8, 1.0)],
    "disgust": [
        (21, -0.45, 0.89, 1.0),
        (22, -0.45, 0.89, 1.0),
        (28, 0.0, -1.0, 0.5),
        (29, 0.0, -1.0, 0.5),
    ],
    "surprise": [(i, 0.0, -1.0, 1.0) for i in (17, 18, 19, 24, 25, 26)],
}

#: dlib 68-point landmarks of ``skimage.data.astronaut()`` (dlib 20.0, HOG detector with one
#: upsampling, the ``face-recognition-models`` shape predictor), cached so generation needs no
#: detector. (x, y) in the 512 x 512 photo.
# fmt: off
ASTRONAUT_LANDMARKS = np.array(
    [
        [179, 104], [180, 116], [181, 127], [182, 139], [185, 150], [191, 160], [200, 168],
        [209, 176], [220, 178], [232, 177], [243, 171], [253, 163], [260, 154], [265, 143],
        [268, 131], [270, 120], [272, 108], [186, 94], [192, 88], [200, 87], [208, 89],
        [216, 92], [236, 93], [244, 91], [252, 91], [260, 92], [265, 99], [226, 102],
        [225, 111], [225, 119], [225, 127], [214, 131], [219, 133], [224, 134], [229, 133],
        [234, 132], [195, 101], [200, 98], [207, 98], [212, 104], [206, 104], [199, 104],
        [237, 106], [243, 100], [250, 100], [255, 105], [250, 107], [244, 107], [201, 139],
        [209, 139], [218, 139], [224, 141], [230, 140], [238, 140], [246, 141], [238, 151],
        [229, 155], [222, 156], [216, 155], [208, 150], [204, 141], [218, 143], [223, 144],
        [230, 143], [243, 142], [229, 150], [223, 151], [217, 150],
    ],
    dtype=np.float32,
)
# fmt: on

#: Side of the square region of the photo around the face that becomes one frame.
_CROP_SIDE = 150.0


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent random stream per (seed, keys): adding subjects changes no earlier one."""
    return np.random.default_rng([seed, *keys])


def make_subject(index: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic subject's neutral face.

    Args:
        index: subject number (1-based, as in the database).
        seed: generation seed.
        size: frame side in pixels.

    Returns:
        (size, size, 3) float32 RGB image in [0, 255] and its (68, 2) float32 landmarks.
    """
    # lazy: scikit-image loads only when the database is generated
    from skimage import data

    rng = _rng(seed, 0, index)
    photo = data.astronaut().astype(np.float32)
    # Colour: per-channel gains and a gamma, applied to the photo.
    gains = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    gamma = float(rng.uniform(0.8, 1.25))
    photo = 255.0 * np.clip(photo / 255.0 * gains, 0, 1) ** gamma

    # Geometry: scale and shift, then a smooth random shape warp.
    lo, hi = ASTRONAUT_LANDMARKS.min(0), ASTRONAUT_LANDMARKS.max(0)
    centre = (lo + hi) / 2
    scale = size / _CROP_SIDE * rng.uniform(0.92, 1.08)
    shift = rng.uniform(-0.03, 0.03, size=2) * size
    matrix = np.array(
        [
            [scale, 0, size / 2 + shift[0] - scale * centre[0]],
            [0, scale, size / 2 + shift[1] - scale * centre[1]],
        ]
    )
    image = cv2.warpAffine(
        photo, matrix, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    landmarks = ASTRONAUT_LANDMARKS @ matrix[:, :2].T + matrix[:, 2]

    coarse = rng.normal(0, 0.012 * size, size=(4, 4, 2)).astype(np.float32)
    shape_warp = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    image = _displace(image, shape_warp)
    ij = np.clip(np.rint(landmarks).astype(int), 0, size - 1)
    landmarks = landmarks + shape_warp[ij[:, 1], ij[:, 0]]

    # Illumination: a linear ramp of +-12 % across the face in a random direction.
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    ramp = 1 + 0.24 * (np.cos(angle) * xx + np.sin(angle) * yy)
    image = np.clip(image * ramp[..., None], 0, 255)
    return image.astype(np.float32), landmarks.astype(np.float32)


def _displace(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Moves image content by ``field`` (H, W, 2) pixels (backward warp, fine for smooth fields)."""
    h, w = field.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = field.astype(np.float32)
    return cv2.remap(
        image,
        xx - field[..., 0],
        yy - field[..., 1],
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT,
    )


def motion_field(landmarks: np.ndarray, emotion: str, shape: tuple[int, int]) -> np.ndarray:
    """The unit displacement field of one emotion's facial action.

    Gaussian RBF interpolation of the displacements of the emotion's moving landmarks
    (:data:`MOTIONS`): exactly the prescribed displacement at those landmarks, smooth, and
    decaying to zero a few sigma away (sigma = 7.5 % of the jaw width), so the motion is local.

    Args:
        landmarks: (68, 2) (x, y) landmarks of the face.
        emotion: one of :data:`EMOTIONS`.
        shape: (H, W) of the image.

    Returns:
        (H, W, 2) float32 (dx, dy) displacement per unit amplitude.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    midline = landmarks[27:31, 0].mean()
    sigma = 0.075 * np.linalg.norm(landmarks[16] - landmarks[0])
    centres, vectors = [], []
    for index, outward, down, magnitude in MOTIONS[emotion]:
        point = landmarks[index]
        side = 1.0 if point[0] >= midline else -1.0
        direction = np.array([side * outward, down])
        centres.append(point)
        vectors.append(magnitude * direction / np.linalg.norm(direction))
    centres, vectors = np.array(centres), np.array(vectors)

    def kernel(points: np.ndarray) -> np.ndarray:
        d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma**2))

    weights = np.linalg.solve(kernel(centres), vectors)  # (K, 2)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
    return (kernel(grid) @ weights).reshape(h, w, 2).astype(np.float32)


def micro_apex_index(frames: int) -> int:
    """Index (0-based, onset = 0) of the apex frame of a micro clip of ``frames`` frames."""
    return round(0.45 * (frames - 1))


def micro_profile(frames: int) -> np.ndarray:
    """Motion amplitude of a micro clip, relative to its apex.

    sin^2 rise from the onset (index 0, value 0) to the apex (:func:`micro_apex_index`, value 1),
    cos^2 fall to the offset (the last frame, value 0).

    Returns:
        (frames,) float64 in [0, 1].
    """
    if frames < 3:
        raise ValueError(f"a micro clip needs at least 3 frames, got {frames}")
    apex = micro_apex_index(frames)
    t = np.arange(frames, dtype=np.float64)
    rise = np.sin(np.pi / 2 * t / apex) ** 2
    fall = np.cos(np.pi / 2 * (t - apex) / (frames - 1 - apex)) ** 2
    return np.where(t <= apex, rise, fall)


def macro_profile(micro_amplitude: float, macro_amplitude: float, decay: int = 6) -> np.ndarray:
    """Motion amplitude (pixels) of a macro clip, frame by frame from its onset.

    With t the index from the onset (t = 0 is the onset, the clip's 1st frame): rise
    ``a(t) = A sin^2(pi t / (2 t_a))`` up to ``A = macro_amplitude`` at
    ``t_a = (N - 1) pi / (2 asin(sqrt(micro_amplitude / A)))``, which makes
    ``a(N - 1) = micro_amplitude`` exactly: the clip's N-th frame (N = :data:`PSEUDO_APEX_N`,
    counting the onset as the 1st) is the micro apex. Then a cos^2 fall to 0 over ``decay``
    frames. The clip's annotated apex is the frame with the largest amplitude.

    Returns:
        (L,) float64 amplitudes, L = ceil(t_a + decay) + 1; the last one is 0.
    """
    if not 0 < micro_amplitude < macro_amplitude:
        raise ValueError("need 0 < micro_amplitude < macro_amplitude")
    rise_frames = PSEUDO_APEX_N - 1  # from the 1st frame (the onset) to the N-th
    peak = rise_frames * np.pi / (2 * math.asin(math.sqrt(micro_amplitude / macro_amplitude)))
    t = np.arange(math.ceil(peak + decay) + 1, dtype=np.float64)
    rise = np.sin(np.pi / 2 * t / peak) ** 2
    fall = np.cos(np.pi / 2 * np.clip((t - peak) / decay, 0, 1)) ** 2
    return macro_amplitude * np.where(t <= peak, rise, fall)


def _write_frames(
    folder: Path,
    start: int,
    base: np.ndarray,
    field: np.ndarray,
    amplitudes: np.ndarray,
    noise: float,
    rng: np.random.Generator,
) -> None:
    """Renders and writes one clip: frame t is ``base`` moved by ``amplitudes[t] * field``."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for t, amplitude in enumerate(amplitudes):
        frame = _displace(base, amplitude * field) if amplitude > 0 else base
        frame = frame + rng.normal(0, noise, size=frame.shape).astype(np.float32)
        frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        path = folder / f"img{start + t}.jpg"
        cv2.imwrite(
            str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )


def _write_sheet(path: Path, rows: list[tuple]) -> None:
    """Writes a one-sheet CASME II coding spreadsheet atomically (temp file + os.replace)."""
    # lazy: only writing the spreadsheets needs openpyxl
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    sheet.append(list(COLUMNS))
    for row in rows:
        sheet.append(list(row))
    atomic_write(path, book.save)  # with the umask's permissions, unlike tempfile.mkstemp


def generate(
    out_dir: str | Path,
    subjects: int = 6,
    clips_per_class: int = 3,
    macro_clips_per_class: int = 2,
    frames: int = 12,
    size: int = 160,
    micro_amplitude: float = 2.0,
    macro_amplitude: float = 6.0,
    seed: int = 0,
    noise: float = 1.0,
    mixed_clips: int = 0,
) -> Path:
    """Writes a synthetic database in the CASME II layout.

    Layout: ``out_dir/CASME2-coding-20190701.xlsx`` (micro clips), ``out_dir/macro-coding.xlsx``
    (macro clips, same columns) and ``out_dir/CASME2_RAW_selected/sub01/EP02_01f/img46.jpg``.
    Deterministic for a seed.

    Args:
        out_dir: database root (created).
        subjects: number of subjects (sub01, sub02, ...).
        clips_per_class: micro clips per subject and emotion.
        macro_clips_per_class: macro clips per subject and emotion.
        frames: frames per micro clip (onset first, offset last).
        size: frame side in pixels (square frames).
        micro_amplitude: displacement (pixels) of the moving landmarks at the micro apex.
        macro_amplitude: displacement (pixels) at the macro apex (> micro_amplitude).
        seed: random seed.
        noise: standard deviation of the per-frame Gaussian sensor noise (grey levels).
        mixed_clips: micro clips per subject of each two-action mix (:data:`MIXES`; default
            none, which leaves the database as it always was).

    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (MICRO_SHEET, MACRO_SHEET):  # no stale sheet may point at frames being rewritten
        (out / name).unlink(missing_ok=True)
    micro = micro_amplitude * micro_profile(frames)
    macro = macro_profile(micro_amplitude, macro_amplitude)
    micro_apex, macro_apex = micro_apex_index(frames), int(np.argmax(macro))
    micro_rows: list[tuple] = []
    macro_rows: list[tuple] = []
    clip_counter = 0
    for s in range(1, subjects + 1):
        base, landmarks = make_subject(s, seed, size)
        for c, emotion in enumerate(EMOTIONS):
            field = motion_field(landmarks, emotion, (size, size))
            aus, objective, micro_ep, macro_ep = CODING[emotion]
            for kind, count, episode, amplitudes, apex, rows in (
                ("micro", clips_per_class, micro_ep, micro, micro_apex, micro_rows),
                ("macro", macro_clips_per_class, macro_ep, macro, macro_apex, macro_rows),
            ):
                for k in range(count):
                    # Half of the clips are numbered across 99 -> 100.
                    start = 46 if clip_counter % 2 == 0 else 100 - len(amplitudes) // 2
                    clip_counter += 1
                    filename = f"EP{episode:02d}_{k + 1:02d}f"
                    folder = out / FRAMES_DIR / f"sub{s:02d}" / filename
                    rng = _rng(seed, 1, s, c, int(kind == "macro"), k)
                    _write_frames(folder, start, base, field, amplitudes, noise, rng)
                    end = start + len(amplitudes) - 1
                    rows.append(
                        (
                            f"{s:02d}",
                            filename,
                            None,
                            start,
                            start + apex,
                            end,
                            None,
                            aus,
                            emotion,
                            objective,
                        )
                    )
        for emotion, mixes in MIXES.items():
            for m, (actions, aus, objective, episode) in enumerate(mixes):
                field = sum(motion_field(landmarks, a, (size, size)) for a in actions)
                for k in range(mixed_clips):
                    filename = f"EP{episode:02d}_{k + 1:02d}f"
                    folder = out / FRAMES_DIR / f"sub{s:02d}" / filename
                    rng = _rng(seed, 2, s, m, k)
                    _write_frames(folder, 46, base, field, micro, noise, rng)
                    row = (f"{s:02d}", filename, None, 46, 46 + micro_apex, 45 + len(micro))
                    micro_rows.append((*row, None, aus, emotion, objective))
    _write_sheet(out / MACRO_SHEET, macro_rows)
    _write_sheet(out / MICRO_SHEET, micro_rows)
    return out


def main(argv: list[str] | None = None) -> int:
    """``moext synth --out DIR [--subjects N] [--seed S] ...``: writes a synthetic database."""
    parser = argparse.ArgumentParser(
        prog="moext synth",
        description="Write a synthetic micro-expression database (CASME II layout).",
    )
    parser.add_argument("--out", required=True, type=Path, help="database root to write")
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--clips-per-class", type=int, default=3)
    parser.add_argument("--macro-clips-per-class", type=int, default=2)
    parser.add_argument("--frames", type=int, default=12, help="frames per micro clip")
    parser.add_argument("--size", type=int, default=160, help="frame side in pixels")
    parser.add_argument("--micro-amplitude", type=float, default=2.0, help="pixels at the apex")
    parser.add_argument("--macro-amplitude", type=float, default=6.0, help="pixels at the apex")
    parser.add_argument("--noise", type=float, default=1.0, help="sensor noise std (grey levels)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mixed-clips", type=int, default=0, help="clips per subject of each two-action mix"
    )
    options = vars(parser.parse_args(argv))  # every option but --out is an argument of generate
    started = time.perf_counter()
    out = generate(options.pop("out"), **options)
    print(f"wrote a synthetic database to {out} in {time.perf_counter() - started:.1f} s")
    return 0
