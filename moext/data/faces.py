"""Facial landmarks and face alignment.

Two landmark back-ends share one small protocol (:class:`LandmarkDetector`): dlib's HOG face
detector + 68-point shape predictor (:class:`DlibDetector`, the default, CPU, no download) and FAN
from the ``face-alignment`` package (:class:`FanDetector`). Both return the 68 points of the
iBUG 300-W layout for the largest face in an image.

Alignment follows the paper: points 8, 9, 25, 40 and 43 of the 68-point layout are used for
aligning and cropping. The paper counts them **1-based** (the usual 300-W numbering): with
1-based numbers, 40 and 43 are the inner corners of the two eyes, 9 is the chin tip, 8 the jaw
point just beside it and 25 a point on the brow, which is exactly what an eye-levelling,
brow-to-chin crop needs. Read 0-based, 40 and 43 would be eyelid points and 25 the outer end of a
brow, which makes no sense for alignment. In this module's 0-based arrays they are therefore
``landmarks[[7, 8, 24, 39, 42]]``.

The crop of a clip is computed once, from its first usable frame (the onset), and applied to
every frame (:func:`align_clip`): re-aligning each frame would register away the very motion
between onset and apex that micro-expression recognition looks for.
"""

from __future__ import annotations

import importlib.util
import logging
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from moext.data.images import check_same_size, read_rgb

log = logging.getLogger(__name__)

#: 0-based indices of the paper's (1-based) alignment points 8, 9, 25, 40, 43.
JAW, CHIN, BROW, INNER_EYE_A, INNER_EYE_B = 7, 8, 24, 39, 42

Box = tuple[float, float, float, float]


class LandmarkDetector(Protocol):
    """Anything that finds 68 landmarks of the largest face in an RGB image."""

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks of the largest face.

        Args:
            image: (H, W, 3) uint8 RGB.

        Returns:
            (68, 2) float32 (x, y) pixel coordinates, or ``None`` when no face is found.
        """
        ...


class FaceNotFoundError(Exception):
    """No face was found where one was needed.

    Attributes:
        path: the image file (or clip) in which no face was found.
    """

    def __init__(self, path: str | Path, detail: str = "") -> None:
        self.path = Path(path)
        message = f"no face found in {self.path}"
        super().__init__(f"{message}: {detail}" if detail else message)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Checks an image and returns it as a contiguous (H, W, 3) uint8 array."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


def default_predictor_path() -> Path:
    """Path of dlib's 68-point shape predictor shipped by ``face-recognition-models``.

    Found without importing that package (its ``__init__`` needs ``pkg_resources``).

    Raises:
        FileNotFoundError: the package or the model file is not installed.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "dlib's shape_predictor_68_face_landmarks.dat was not found: install "
            "`face-recognition-models` or pass predictor_path=..."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models"
    path = path / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise FileNotFoundError(f"dlib's 68-point shape predictor is missing: {path}")
    return path


def _largest_dlib_box(detector, image: np.ndarray, upsample: int) -> Box | None:
    """Largest face box (x0, y0, x1, y1) of dlib's HOG detector; ties go to the higher score."""
    rects, scores, _ = detector.run(image, upsample, 0.0)
    if len(rects) == 0:
        return None
    _, rect = max(zip(scores, rects, strict=True), key=lambda sr: (sr[1].area(), sr[0]))
    return (rect.left(), rect.top(), rect.right(), rect.bottom())


class DlibDetector:
    """dlib's HOG frontal face detector + 68-point shape predictor (CPU, no download).

    Args:
        predictor_path: ``shape_predictor_68_face_landmarks.dat``; default: the copy shipped by
            the ``face-recognition-models`` package.
        upsample: how many times the detector upsamples the image (finds smaller faces).
    """

    def __init__(self, predictor_path: str | Path | None = None, upsample: int = 1) -> None:
        # lazy: dlib's native library loads only when this backend is used
        import dlib

        path = Path(predictor_path) if predictor_path is not None else default_predictor_path()
        if not path.is_file():
            raise FileNotFoundError(f"dlib shape predictor file not found: {path}")
        self.predictor_path = path
        self.upsample = upsample
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(path))

    def __reduce__(self):
        # Picklable (e.g. for spawned data-preparation workers): rebuilt from its arguments.
        return (DlibDetector, (self.predictor_path, self.upsample))

    def face_box(self, image: np.ndarray) -> Box | None:
        """Box (x0, y0, x1, y1) of the largest face in an (H, W, 3) uint8 RGB image, or None."""
        return _largest_dlib_box(self.detector, _as_rgb(image), self.upsample)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """(68, 2) float32 landmarks of the largest face in an (H, W, 3) uint8 image, or None."""
        # lazy: dlib's native library loads only when this backend is used
        import dlib

        image = _as_rgb(image)
        box = _largest_dlib_box(self.detector, image, self.upsample)
        if box is None:
            return None
        shape = self.predictor(image, dlib.rectangle(*(int(v) for v in box)))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (it holds a ``code/`` folder; a ``torch.save`` zip does not)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def load_fan(weights: str | Path, network_size: int = 4, device: str = "cpu"):
    """Loads a FAN landmark network from a local file.

    Accepts the formats the ``face-alignment`` package itself has distributed:

    - a ``torch.save`` state dict (face-alignment >= 1.5 downloads ``2DFAN4-11f355bf06.pth.tar``),
      optionally wrapped as ``{"state_dict": ...}`` and/or with ``module.`` prefixes; loaded with
      ``weights_only=True`` into ``face_alignment.models.FAN(network_size)``, strictly (missing or
      unexpected keys are an error);
    - a TorchScript archive (face-alignment 1.3/1.4 downloaded ``2DFAN4_1.6-c827573f02.zip``).

    Args:
        weights: path of the file.
        network_size: number of stacked hourglasses of a state-dict file (2DFAN-4: 4).
        device: torch device.

    Returns:
        The network in eval mode; it maps (B, 3, 256, 256) images in [0, 1] to 68 heatmaps of
        64x64 (a list of them, one per hourglass, for a state-dict FAN).
    """
    # lazy: only the FAN backend needs torch
    import torch
    from face_alignment.models import FAN

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"FAN weights file not found: {path}")
    if _is_torchscript(path):
        net = torch.jit.load(str(path), map_location=device)
    else:
        state = torch.load(path, map_location=device, weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: neither a FAN state dict nor a TorchScript archive")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        net = FAN(network_size)
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{path} is not a FAN-{network_size} state dict: {err}") from err
    return net.to(device).eval()


def _local_face_alignment_class():
    """``FaceAlignment`` whose landmark network comes from a local file instead of a download.

    face-alignment 1.5 builds its network in ``FaceAlignment._load_native(network_name,
    network_size, device, dtype)``, which fetches the weights with ``load_file_from_url``.
    Overriding that one method in a subclass (no monkey-patching) keeps the package's own
    pre-processing, flip test-time augmentation and heatmap decoding untouched.
    """
    # lazy: optional backend, loaded only when used
    import face_alignment

    if not hasattr(face_alignment.FaceAlignment, "_load_native"):
        raise ImportError(
            f"face-alignment {face_alignment.__version__} has no FaceAlignment._load_native; "
            "local FAN weights need face-alignment >= 1.5"
        )

    class LocalFaceAlignment(face_alignment.FaceAlignment):
        def __init__(self, weights: Path, *args, **kwargs) -> None:
            self.weights_path = weights
            super().__init__(*args, **kwargs)

        def _load_native(self, network_name, network_size, device, dtype):
            return load_fan(self.weights_path, network_size, device).to(dtype=dtype)

    return LocalFaceAlignment


class FanDetector:
    """FAN 2D landmarks (``face-alignment`` package), usable fully offline.

    Args:
        weights: local FAN weights (see :func:`load_fan` for the accepted formats). ``None``: the
            package downloads 2DFAN-4 itself (or reuses it from ``$TORCH_HOME/hub/checkpoints``).
        device: torch device, e.g. ``"cpu"``, ``"cuda"``.
        face_detector: what finds the face box for FAN: ``"dlib"`` (dlib's HOG detector, CPU, no
            download; default), ``"sfd"`` (the package's S3FD; downloads its weights unless
            ``sfd_weights`` is given), or a callable image -> box (x0, y0, x1, y1) | None.
        sfd_weights: local S3FD weights for ``face_detector="sfd"``.
        network_size: hourglass stacks of a state-dict ``weights`` file (2DFAN-4: 4).
        flip_input: average with the horizontally flipped image (the package's default).
        upsample: dlib detector upsampling.
        compile: let face-alignment ``torch.compile`` the network (slow first call).

    face-alignment decodes heatmaps with numba: the first call in a process compiles that code
    (about 10 s on a small CPU), later calls are fast.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "cpu",
        face_detector: Literal["dlib", "sfd"] | Callable[[np.ndarray], Box | None] = "dlib",
        sfd_weights: str | Path | None = None,
        network_size: int = 4,
        flip_input: bool = True,
        upsample: int = 1,
        compile: bool = False,
    ) -> None:
        # lazy: optional backend, loaded only when used
        import face_alignment

        self._init_args = (
            weights,
            device,
            face_detector,
            sfd_weights,
            network_size,
            flip_input,
            upsample,
            compile,
        )
        self._box_fn: Callable[[np.ndarray], Box | None] | None = None
        if callable(face_detector):
            self._box_fn = face_detector
            package_detector, detector_kwargs = "folder", {}
        elif face_detector == "dlib":
            # lazy: dlib's native library loads only when this backend is used
            import dlib

            hog = dlib.get_frontal_face_detector()
            self._box_fn = lambda image: _largest_dlib_box(hog, image, upsample)
            package_detector, detector_kwargs = "folder", {}  # "folder" loads nothing
        elif face_detector == "sfd":
            package_detector = "sfd"
            detector_kwargs = {"path_to_detector": str(sfd_weights)} if sfd_weights else {}
        else:
            raise ValueError(
                f"unknown face_detector {face_detector!r}; use 'dlib', 'sfd' or a callable"
            )

        kwargs = dict(
            landmarks_type=face_alignment.LandmarksType.TWO_D,
            network_size=network_size,
            device=device,
            flip_input=flip_input,
            face_detector=package_detector,
            face_detector_kwargs=detector_kwargs,
            compile=compile,
        )
        if weights is None:
            self.fa = face_alignment.FaceAlignment(**kwargs)
        else:
            self.fa = _local_face_alignment_class()(Path(weights), **kwargs)

    def __reduce__(self):
        # Picklable (a callable face_detector must be picklable too): rebuilt from its arguments.
        return (FanDetector, self._init_args)

    def face_box(self, image: np.ndarray) -> Box | None:
        """Box (x0, y0, x1, y1) of the largest face in an (H, W, 3) uint8 RGB image, or None."""
        image = _as_rgb(image)
        if self._box_fn is not None:
            return self._box_fn(image)
        boxes = self.fa.face_detector.detect_from_image(image.copy())
        if len(boxes) == 0:
            return None
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        return tuple(float(v) for v in box[:4])

    def __call__(self, image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        """Landmarks of the largest face (or of the face in ``box``).

        Args:
            image: (H, W, 3) uint8 RGB.
            box: face box (x0, y0, x1, y1); default: found by the face detector.

        Returns:
            (68, 2) float32 (x, y), or ``None`` when no face is found.
        """
        image = _as_rgb(image)
        if box is None:
            box = self.face_box(image)
            if box is None:
                return None
        points = self.fa.get_landmarks_from_image(image, detected_faces=[np.asarray(box, float)])
        if not points:
            return None
        return np.asarray(points[0][:, :2], dtype=np.float32)


def make_detector(
    backend: str = "dlib", weights: str | Path | None = None, device: str = "cpu"
) -> LandmarkDetector:
    """A landmark detector by name.

    Args:
        backend: ``"dlib"`` (``weights`` = shape predictor file) or ``"fan"`` (``weights`` =
            FAN weights file; face boxes from dlib's HOG detector).
        weights: optional local model file; default: the back-end's own.
        device: torch device for ``"fan"``.
    """
    if backend == "dlib":
        return DlibDetector(predictor_path=weights)
    if backend == "fan":
        return FanDetector(weights=weights, device=device)
    raise ValueError(f"unknown landmark backend {backend!r}; use 'dlib' or 'fan'")


def alignment_matrix(landmarks: np.ndarray, size: int, margin: float = 0.15) -> np.ndarray:
    """Affine transform from an image to its aligned, square face crop.

    Rotates about the midpoint of the inner eye corners (1-based points 40, 43) so that they are
    level, then scales and translates so that the face box fills the crop: vertically from the
    brow (point 25) to the lower of the chin points (8, 9), horizontally centred on the eyes,
    with ``margin`` times the brow-to-chin height added on every side.

    Args:
        landmarks: (68, 2) (x, y) landmarks, 0-based array order (see the module docstring).
        size: side of the square crop in pixels.
        margin: margin on each side, as a fraction of the brow-to-chin height.

    Returns:
        (2, 3) float64 matrix for :func:`warp` / ``cv2.warpAffine``.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points.shape}")
    eye_a, eye_b = points[INNER_EYE_A], points[INNER_EYE_B]
    eyes = (eye_a + eye_b) / 2
    angle = np.arctan2(eye_b[1] - eye_a[1], eye_b[0] - eye_a[0])
    cos, sin = np.cos(-angle), np.sin(-angle)
    rotation = np.array([[cos, -sin], [sin, cos]])

    rotated = (points[[JAW, CHIN, BROW]] - eyes) @ rotation.T  # eye midpoint at the origin
    top = rotated[2, 1]
    bottom = rotated[:2, 1].max()
    height = bottom - top
    if height <= 0:
        raise ValueError("degenerate landmarks: the chin is not below the brow")
    scale = size / (height * (1 + 2 * margin))
    centre = np.array([0.0, (top + bottom) / 2])

    linear = scale * rotation
    offset = size / 2 - linear @ eyes - scale * centre
    return np.hstack([linear, offset[:, None]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Points of an image in the coordinates of its crop by an alignment matrix.

    Args:
        points: (N, 2) (x, y) pixel coordinates in the image (e.g. its 68 landmarks).
        matrix: (2, 3) affine from :func:`alignment_matrix`.

    Returns:
        (N, 2) float32 (x, y) in the crop's pixel coordinates (where :func:`warp` puts them).
    """
    points = np.asarray(points, dtype=np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Applies an alignment matrix.

    Args:
        image: (H, W, 3) uint8.
        matrix: (2, 3) affine from :func:`alignment_matrix`.
        size: side of the output.

    Returns:
        (size, size, 3) uint8; pixels from outside the image are black.
    """
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def align_clip(
    frame_paths: Sequence[str | Path],
    detector: LandmarkDetector,
    size: int,
    on_no_face: Literal["error", "next"] = "error",
    margin: float = 0.15,
) -> np.ndarray:
    """Aligns and crops a clip with ONE transform, found on its first frame (the onset).

    Args:
        frame_paths: the clip's frame files, onset first.
        detector: landmark detector.
        size: side of the square crops.
        on_no_face: when no face is found on the first frame: ``"error"`` raises
            :class:`FaceNotFoundError`; ``"next"`` uses the first following frame with a face
            and logs which one (a declared fallback; never a blind centre crop).
        margin: see :func:`alignment_matrix`.

    Returns:
        (T, size, size, 3) uint8 crops, T = len(frame_paths).

    Raises:
        FaceNotFoundError: no usable face (naming the onset file, or the clip for "next").
        FrameSizeError: a frame has another size than the first (the transform would
            misalign it), naming both files and sizes.
    """
    if on_no_face not in ("error", "next"):
        raise ValueError(f"on_no_face must be 'error' or 'next', not {on_no_face!r}")
    paths = [Path(p) for p in frame_paths]
    if not paths:
        raise ValueError("align_clip needs at least one frame")
    images: dict[int, np.ndarray] = {}
    matrix = None
    for i, path in enumerate(paths):
        images[i] = read_rgb(path)
        landmarks = detector(images[i])
        if landmarks is not None:
            matrix = alignment_matrix(landmarks, size, margin)
            if i > 0:
                log.warning("no face in %s; the clip is aligned on %s instead", paths[0], path)
            break
        if on_no_face == "error":
            raise FaceNotFoundError(path)
    if matrix is None:
        raise FaceNotFoundError(paths[0], f"nor in any of the clip's {len(paths)} frames")
    crops = []
    for i, path in enumerate(paths):
        image = images[i] if i in images else read_rgb(path)
        check_same_size(path, image, paths[0], images[0])  # one transform fits one frame size
        crops.append(warp(image, matrix, size))
    return np.stack(crops)
