"""Landmarks and alignment on a real face photo (scikit-image's astronaut); FAN from local files."""

from __future__ import annotations

import logging
import pickle
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from moext.data import faces
from moext.data.synth import ASTRONAUT_LANDMARKS


@pytest.fixture(scope="module")
def dlib_detector() -> faces.DlibDetector:
    return faces.DlibDetector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def save_rgb(path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def rotate(image: np.ndarray, degrees: float, centre=(220, 130)) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(image, matrix, image.shape[1::-1])


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_dlib_finds_the_astronaut(dlib_detector, astronaut):
    landmarks = dlib_detector(astronaut)
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
    # The largest face wins over a weak false detection on the mission patch; the synthetic
    # database's cached landmarks are these.
    assert np.abs(landmarks - ASTRONAUT_LANDMARKS).max() <= 1.0
    # 1-based 40 and 43 are the inner eye corners, 9 the chin tip: the module's 0-based indices.
    inner_a, inner_b = landmarks[faces.INNER_EYE_A], landmarks[faces.INNER_EYE_B]
    assert 15 < inner_b[0] - inner_a[0] < 40
    assert landmarks[faces.CHIN, 1] == landmarks[:, 1].max()


def test_blank_image_has_no_face(dlib_detector):
    assert dlib_detector(np.full((200, 200, 3), 128, np.uint8)) is None


def test_alignment_levels_the_eyes_and_fills_the_crop(dlib_detector, astronaut):
    size = 128
    image = rotate(astronaut, 15)
    landmarks = dlib_detector(image)
    matrix = faces.alignment_matrix(landmarks, size)
    crop = faces.warp(image, matrix, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8

    moved = transform(landmarks, matrix)
    eye_a, eye_b = moved[faces.INNER_EYE_A], moved[faces.INNER_EYE_B]
    assert abs(eye_a[1] - eye_b[1]) < 0.01
    assert abs((eye_a[0] + eye_b[0]) / 2 - size / 2) < 0.01
    # The face fills the crop, inside it: jaw-to-jaw width and brow-to-chin height.
    assert moved.min() >= 0 and moved.max() <= size
    assert np.ptp(moved[:, 0]) > 0.7 * size and np.ptp(moved[:, 1]) > 0.7 * size

    # Measured again on the crop itself: the inner eye corners are level within 2 px.
    again = dlib_detector(crop)
    assert again is not None
    assert abs(again[faces.INNER_EYE_A, 1] - again[faces.INNER_EYE_B, 1]) <= 2
    assert np.abs(again - moved).mean() < 3


def test_one_crop_per_clip_keeps_the_motion(dlib_detector, astronaut, tmp_path):
    """A 3 px shift between onset and a later frame survives: the crop comes from the onset."""
    shifted = cv2.warpAffine(astronaut, np.float32([[1, 0, 3], [0, 1, 0]]), (512, 512))
    paths = [tmp_path / "img46.png", tmp_path / "img47.png"]
    save_rgb(paths[0], astronaut)
    save_rgb(paths[1], shifted)
    calls = []

    def counting(image):
        calls.append(image.shape)
        return dlib_detector(image)

    clip = faces.align_clip(paths, counting, 128)
    assert clip.shape == (2, 128, 128, 3) and clip.dtype == np.uint8
    assert len(calls) == 1
    scale = np.hypot(*faces.alignment_matrix(dlib_detector(astronaut), 128)[0, :2])
    grey = [cv2.cvtColor(c, cv2.COLOR_RGB2GRAY).astype(np.float64) for c in clip]
    window = cv2.createHanningWindow((128, 128), cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(grey[0], grey[1], window)
    assert dx == pytest.approx(3 * scale, abs=0.4) and abs(dy) < 0.5


def test_no_face_on_the_onset(dlib_detector, astronaut, tmp_path, caplog):
    blank = tmp_path / "img10.jpg"
    save_rgb(blank, np.full(astronaut.shape, 90, np.uint8))  # frames of a clip share a size
    face = tmp_path / "img11.jpg"
    save_rgb(face, astronaut)

    with pytest.raises(faces.FaceNotFoundError, match="img10.jpg") as err:
        faces.align_clip([blank, face], dlib_detector, 64)
    assert err.value.path == blank

    with caplog.at_level(logging.WARNING, logger="moext.data.faces"):
        clip = faces.align_clip([blank, face], dlib_detector, 64, on_no_face="next")
    assert clip.shape == (2, 64, 64, 3)
    assert "img11.jpg" in caplog.text and "img10.jpg" in caplog.text

    with pytest.raises(faces.FaceNotFoundError, match="img10.jpg"):
        faces.align_clip([blank, blank], dlib_detector, 64, on_no_face="next")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        faces.align_clip([tmp_path / "missing.jpg"], dlib_detector, 64)


def test_a_truncated_onset_is_damaged_not_faceless(astronaut, tmp_path):
    onset = tmp_path / "img10.jpg"
    save_rgb(onset, astronaut)
    onset.write_bytes(onset.read_bytes()[: onset.stat().st_size * 6 // 10])
    with pytest.raises(OSError, match=r"img10.jpg: damaged or truncated") as err:
        faces.align_clip([onset, onset], lambda image: None, 64)
    assert not isinstance(err.value, faces.FaceNotFoundError)


def test_make_detector_and_errors(dlib_detector, tmp_path):
    assert isinstance(faces.make_detector("dlib"), faces.DlibDetector)
    with pytest.raises(ValueError, match="backend"):
        faces.make_detector("nope")
    with pytest.raises(FileNotFoundError, match="nothing.dat"):
        faces.DlibDetector(tmp_path / "nothing.dat")
    clone = pickle.loads(pickle.dumps(dlib_detector))
    assert clone.predictor_path == dlib_detector.predictor_path


# ---- FAN from local weights (no download) -------------------------------------------------


def _import_face_alignment_without_jit() -> None:
    """face-alignment decorates its heatmap decoding with numba; compiling it takes ~10 s on
    first use. The tests import the package with numba's JIT off (plain Python, same results)
    unless it is already imported."""
    if "face_alignment" in sys.modules:
        return
    import numba

    previous = numba.config.DISABLE_JIT
    numba.config.DISABLE_JIT = True
    try:
        import face_alignment  # noqa: F401
    finally:
        numba.config.DISABLE_JIT = previous


@pytest.fixture(scope="module")
def fan_files(tmp_path_factory):
    """A randomly initialised 1-hourglass FAN, saved as a state dict and as TorchScript."""
    torch = pytest.importorskip("torch")
    _import_face_alignment_without_jit()
    from face_alignment.models import FAN

    torch.manual_seed(0)
    net = FAN(1).eval()
    folder = tmp_path_factory.mktemp("fan")
    state = folder / "fan1.pth.tar"
    torch.save(net.state_dict(), state)
    script = folder / "fan1.zip"
    with torch.no_grad():
        torch.jit.trace(net, torch.rand(1, 3, 256, 256), check_trace=False).save(str(script))
    return state, script


@pytest.fixture
def no_download(monkeypatch):
    import face_alignment.api
    import face_alignment.utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(face_alignment.api, "load_file_from_url", refuse)
    monkeypatch.setattr(face_alignment.utils, "load_file_from_url", refuse)


def test_fan_loads_local_weights(fan_files, astronaut, no_download, tmp_path):
    state, script = fan_files
    fan = faces.FanDetector(state, network_size=1, flip_input=False)  # one forward pass a call
    landmarks = fan(astronaut)
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
    assert np.isfinite(landmarks).all()
    # FAN looks at the dlib face box: its (untrained) points fall around that face.
    box = fan.face_box(astronaut)
    assert box is not None and 150 < (box[0] + box[2]) / 2 < 290
    assert ((landmarks > 0) & (landmarks < 512)).all()

    # The same weights as TorchScript give the same points.
    np.testing.assert_allclose(
        faces.FanDetector(script, flip_input=False)(astronaut), landmarks, atol=1e-3
    )

    # A given box; no face -> None.
    assert fan(astronaut, box=box).shape == (68, 2)
    assert fan(np.full((200, 200, 3), 128, np.uint8)) is None

    with pytest.raises(ValueError, match="fan1.pth.tar"):
        faces.load_fan(state, network_size=4)
    with pytest.raises(FileNotFoundError):
        faces.make_detector("fan", weights=tmp_path / "absent.pth")
    # Without local weights the package's own download is used (refused here).
    with pytest.raises(AssertionError, match="download"):
        faces.FanDetector()
