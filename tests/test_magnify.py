"""Motion magnification: a known sub-pixel motion comes out (1 + alpha) times larger, a still
clip comes out unchanged, out-of-band motion is kept or removed, colour keeps its chroma, bad
settings are refused in one line (by the experiment's preflight too), the AKMNet paper configs ask
for phase magnification that fits their databases, and the benchmark script runs."""

import math
from pathlib import Path

import pytest
import torch

from benchmarks import magnify as magnify_benchmark
from moext.data.magnify import (
    MAGNIFY_VERSION,
    MagnifySettings,
    butter_bandpass,
    magnify,
    magnify_linear,
    magnify_luminance,
    magnify_phase,
    max_levels,
)
from moext.data.readers import FRAME_RATES, frame_rates

SIZE, FRAMES, FPS = 64, 32, 32.0
#: Unit normal of the texture's stripes (the only direction a one-orientation texture can show
#: motion in); the texture moves along it. (2, 1): oblique, yet periodic on the pixel grid.
NORMAL = (2 / math.sqrt(5), 1 / math.sqrt(5))


def frequencies() -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.fft.fftfreq(SIZE, dtype=torch.float64)
    return torch.meshgrid(f, f, indexing="ij")  # fy, fx


def stripes(seed: int = 0) -> torch.Tensor:
    """A smoothed-noise texture of one orientation (wood grain): a random profile along
    ``NORMAL`` (periods of about 4 to 32 px, so every pyramid level carries some), periodic."""
    g = torch.Generator().manual_seed(seed)
    fy, fx = frequencies()
    along = fx * NORMAL[0] + fy * NORMAL[1]
    across = fx * -NORMAL[1] + fy * NORMAL[0]
    on_line = across.abs() < 1e-9  # one orientation: no variation along the stripes
    band = (along.abs() > 1 / 40) & (along.abs() < 1 / 4)
    noise = torch.randn(SIZE, SIZE, generator=g, dtype=torch.float64)
    spectrum = torch.fft.fft2(noise) * (on_line & band)
    image = torch.fft.ifft2(spectrum).real
    return 0.5 + 0.15 * image / image.std()


def translate(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Images (..., H, W) moved by ``shifts`` (...) pixels along ``NORMAL`` (Fourier shift:
    exact and sub-pixel for these periodic images)."""
    fy, fx = frequencies()
    along = fx * NORMAL[0] + fy * NORMAL[1]
    phase = torch.exp(-2j * math.pi * shifts[..., None, None] * along)
    return torch.fft.ifft2(torch.fft.fft2(images) * phase).real


def measured_shifts(reference: torch.Tensor, frames: torch.Tensor, margin: int = 12):
    """Least-squares (Lucas-Kanade) displacement of each frame (T, H, W) from ``reference``
    along ``NORMAL``, iterated (each round moves the frames back by the estimate); the borders,
    where the magnifier mirrors the image, are left out. Returns (T,) float64."""
    reference, frames = reference.double(), frames.double()
    gy, gx = torch.gradient(reference)
    inner = (slice(margin, -margin), slice(margin, -margin))
    grad = (gx * NORMAL[0] + gy * NORMAL[1])[inner]
    shifts = torch.zeros(len(frames), dtype=torch.float64)
    for _ in range(5):
        diff = (translate(frames, -shifts) - reference)[(..., *inner)]
        shifts -= (grad * diff).sum((-2, -1)) / (grad * grad).sum()
    return shifts


def moving_clip(displacement: torch.Tensor) -> torch.Tensor:
    """(T, H, W) float32: the texture moved by ``displacement`` (T,) pixels along NORMAL."""
    return translate(stripes(), displacement).float()


def gain(clip_in: torch.Tensor, clip_out: torch.Tensor, motion: torch.Tensor, frames=None):
    """Least-squares slope of the output's measured displacement on ``motion`` over
    ``frames``: how many times ``motion`` the output moved."""
    frames = frames if frames is not None else slice(None)
    measured = measured_shifts(clip_in[0], clip_out)
    return float((measured[frames] * motion[frames]).sum() / (motion[frames] ** 2).sum())


TIME = torch.arange(FRAMES, dtype=torch.float64) / FPS
IN_BAND = 0.1 * torch.sin(2 * math.pi * 2.0 * TIME)  # 2 Hz, the centre of the band (1, 4) Hz


@pytest.mark.parametrize(("temporal", "alpha"), [("ideal", 5), ("ideal", 10), ("butter", 10)])
def test_small_motion_comes_out_one_plus_alpha_times_larger(temporal, alpha):
    clip = moving_clip(IN_BAND)
    assert gain(clip, clip, IN_BAND) == pytest.approx(1, abs=0.02)  # the measurement itself
    out = magnify_phase(clip, alpha, 1.0, 4.0, FPS, temporal=temporal)
    assert out.shape == clip.shape and out.dtype == clip.dtype
    # the causal Butterworth starts at rest: judge it once its start-up has passed
    frames = slice(FRAMES // 2, None) if temporal == "butter" else None
    assert gain(clip, out, IN_BAND, frames) == pytest.approx(1 + alpha, rel=0.15)


def test_motion_outside_the_band_is_kept_or_removed():
    """A 12 Hz motion beside the 2 Hz one: passed through unmagnified, or removed with
    ``attenuate`` (the band-pass is ideal: both frequencies fall on FFT bins)."""
    out_of_band = 0.1 * torch.sin(2 * math.pi * 12.0 * TIME)
    clip = moving_clip(IN_BAND + out_of_band)
    for attenuate, expected in ((False, 1.0), (True, 0.0)):
        out = magnify_phase(clip, 5, 1.0, 4.0, FPS, temporal="ideal", attenuate=attenuate)
        measured = measured_shifts(clip[0], out)
        design = torch.stack([IN_BAND, out_of_band], dim=1)
        in_gain, out_gain = torch.linalg.lstsq(design, measured[:, None]).solution[:, 0]
        assert float(in_gain) == pytest.approx(6, rel=0.15)
        assert float(out_gain) == pytest.approx(expected, abs=0.15)


@pytest.mark.parametrize("temporal", ["butter", "ideal"])
def test_a_still_clip_comes_out_unchanged(temporal):
    still = stripes(1).float()[None].repeat(12, 1, 1)
    out = magnify_phase(still, 15, 0.3, 12.0, 200.0, temporal=temporal, attenuate=True)
    assert (out - still).abs().max() < 1e-5


def test_output_stays_in_range_and_odd_sizes_work():
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(6, 37, 50, generator=g)
    out = magnify_phase(clip, 30, 0.3, 12.0, 200.0)
    assert out.shape == clip.shape and 0 <= out.min() and out.max() <= 1
    assert magnify_phase(clip[:1], 30, 0.3, 12.0, 200.0).equal(clip[:1])  # nothing to compare


def test_linear_is_the_clip_stand_in():
    """``I_t + alpha (I_t - I_onset)`` clipped, per channel: ``magnify_clips`` on one clip."""
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(5, 3, 8, 8, generator=g)
    expected = torch.clamp(clip + 4.0 * (clip - clip[0]), 0, 1)
    assert torch.equal(magnify_linear(clip, 4.0), expected)
    assert torch.equal(magnify(clip, MagnifySettings("linear", alpha=4.0), None), expected)


def test_colour_magnifies_the_luminance_and_keeps_the_chroma():
    grey = moving_clip(IN_BAND)
    tint = torch.tensor([0.9, 1.0, 1.15])
    rgb = (grey[..., None] * tint).clamp(0, 1)  # (T, H, W, 3)
    settings = MagnifySettings(alpha=5, low=1.0, high=4.0)
    out = magnify(rgb, settings, FPS)
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114])).sum(-1)
    expected_luma = magnify_phase(luma, 5, 1.0, 4.0, FPS)
    out_luma = (out * torch.tensor([0.299, 0.587, 0.114])).sum(-1)
    assert out.shape == rgb.shape
    assert (out_luma - expected_luma).abs().max() < 1e-5
    # chroma (YIQ's I and Q, YCbCr's Cb and Cr alike): every channel minus Y, unchanged
    assert ((out - out_luma[..., None]) - (rgb - luma[..., None])).abs().max() < 1e-5
    first = magnify(rgb.permute(0, 3, 1, 2), settings, FPS)  # (T, 3, H, W)
    assert (first.permute(0, 2, 3, 1) - out).abs().max() < 1e-6
    with pytest.raises(ValueError, match="ambiguous"):
        magnify_luminance(torch.rand(2, 3, 4, 3), lambda y: y)


def test_butterworth_is_scipys():
    signal = pytest.importorskip("scipy.signal")
    for low, high, fps in ((0.3, 12.0, 200.0), (1.0, 4.0, 32.0), (0.5, 14.0, 30.0)):
        b, a = signal.butter(1, [low, high], btype="bandpass", fs=fps)
        b0, a1, a2 = butter_bandpass(low, high, fps)
        assert b == pytest.approx([b0, 0.0, -b0], abs=1e-12)
        assert a == pytest.approx([1.0, a1, a2], abs=1e-12)


@pytest.mark.parametrize(
    ("settings", "fps", "size", "message"),
    [
        (MagnifySettings(alpha=0), 200.0, 128, "alpha must be > 0"),
        (MagnifySettings(alpha=-3, method="linear"), None, 128, "alpha must be > 0"),
        (MagnifySettings(method="eulerian"), 200.0, 128, "method must be one of"),
        (MagnifySettings(), None, 128, "frame rate is unknown"),
        (MagnifySettings(high=20.0), 30.0, 128, "fps / 2 = 15"),
        (MagnifySettings(low=0.0), 200.0, 128, "0 < low < high"),
        (MagnifySettings(low=5.0, high=5.0), 200.0, 128, "0 < low < high"),
        (MagnifySettings(levels=6), 200.0, 128, "128 px crop allows 1 to 5"),
        (MagnifySettings(levels=5), 200.0, (64, 96), "64x96 px crop allows 1 to 4"),
        (MagnifySettings(), 200.0, 6, "too small"),
        (MagnifySettings(temporal="fir"), 200.0, 128, "temporal must be one of"),
        (MagnifySettings(sigma=-1), 200.0, 128, "sigma must be >= 0"),
        (MagnifySettings(alpha=math.inf), 200.0, 128, "alpha must be a finite number, got inf"),
        (MagnifySettings("linear", math.inf), None, 128, "alpha must be a finite number"),
        (MagnifySettings(sigma=math.nan), 200.0, 128, "sigma must be >= 0 and finite, got nan"),
        (MagnifySettings(sigma=math.inf), 200.0, 128, "sigma must be >= 0 and finite, got inf"),
        (MagnifySettings(alpha="15"), 200.0, 128, "alpha must be a number, got '15'"),
        (MagnifySettings("linear", "15"), None, 128, "alpha must be a number, got '15'"),
        (MagnifySettings(alpha=True), 200.0, 128, "alpha must be a number, got True"),
        (MagnifySettings(high="12"), 200.0, 128, "high must be a number, got '12'"),
        (MagnifySettings(levels="3"), 200.0, 128, "levels must be a whole number or None, got '3'"),
        (MagnifySettings(attenuate="false"), 200.0, 128, "attenuate must be true or false"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, fps, size, message):
    with pytest.raises(ValueError, match=message) as error:
        settings.check(fps, size)
    assert "\n" not in str(error.value)


def test_good_settings_pass_and_key_what_matters():
    MagnifySettings().check(200.0, 128)
    MagnifySettings(high=14.0).check(30.0, 224)
    MagnifySettings("linear", alpha=15).check(None, 4)  # linear needs neither fps nor size
    assert [max_levels(s) for s in (7, 8, 32, 64, 128, 224)] == [0, 1, 3, 4, 5, 5]
    assert MagnifySettings("linear", 15, sigma=1).key() == MagnifySettings("linear", 15).key()
    assert MagnifySettings(sigma=1).key() != MagnifySettings().key()
    assert MagnifySettings().key()["version"] == MAGNIFY_VERSION
    with pytest.raises(ValueError, match="frames must be"):
        magnify_phase(torch.rand(4, 16, 16, 3), 15, 0.3, 12.0, 200.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_the_gpu_gives_the_cpus_result():
    clip = moving_clip(IN_BAND)
    for temporal in ("butter", "ideal"):
        cpu = magnify_phase(clip, 10, 1.0, 4.0, FPS, temporal=temporal)
        gpu = magnify_phase(clip.cuda(), 10, 1.0, 4.0, FPS, temporal=temporal)
        assert gpu.device.type == "cuda"
        assert (gpu.cpu() - cpu).abs().max() < 1e-4


def test_benchmark_runs_tiny(tmp_path):
    out = magnify_benchmark.main(
        ["--sizes", "32", "--frames", "6", "--repeats", "1", "--json", str(tmp_path / "m.json")]
    )
    assert [r["method"] for r in out["speed"]] == ["phase, butter", "phase, ideal", "linear"]
    assert all(r["frames_per_s"] > 0 for r in out["speed"])
    assert (tmp_path / "m.json").exists()


# --- in an experiment --------------------------------------------------------------------------

AKMNET = Path(__file__).parents[1] / "experiments" / "akmnet"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("{method: phase, alpha: 0}", "magnify.alpha must be > 0, got 0.0"),
        ("{method: linear, alpha: -2}", "magnify.alpha must be > 0, got -2.0"),
        ("{method: phase, high: 20}", "database synth (30 fps, 64 px crops): magnify: the band"),
        ("{method: phase, levels: 5}", "a 64 px crop allows 1 to 4"),
        ("{method: phase, temporal: fir}", "magnify.temporal must be one of"),
    ],
)
def test_preflight_refuses_each_bad_magnification_in_one_line(override, message):
    from moext.experiment.config import parse_stage
    from moext.experiment.preflight import StageConfigError, check_stages

    stage = parse_stage(AKMNET / "demo.yaml", ["--data.init_args.magnify", override])
    with pytest.raises(StageConfigError, match="data.init_args.magnify") as error:
        check_stages(stage, None, ("disgust", "happiness", "surprise"))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("classification stage (")


def test_a_database_without_a_known_frame_rate_is_refused_for_phase_only():
    from moext.data.clips.datamodule import ClipDataModule

    assert frame_rates("megc2019") == {"casme2": 200.0, "samm": 200.0, "smic": 100.0}
    assert frame_rates("nodb") == {"nodb": None} and "nodb" not in FRAME_RATES
    common = {"datasets": ["synth", "nodb"], "protocol": "synth-3", "image_size": 64}
    ClipDataModule(**common, magnify=15.0).check_magnify()  # linear: no frame rate needed
    with pytest.raises(ValueError, match="database nodb \\(frame rate unknown, 64 px crops\\)"):
        ClipDataModule(**common, magnify=MagnifySettings()).check_magnify()


def test_akmnet_paper_configs_ask_for_phase_magnification_at_alpha_15():
    from moext.experiment.config import parse_config

    for path in sorted(AKMNET.glob("*.yaml")):
        data = parse_config(str(path)).data.init_args
        if path.name == "demo.yaml":  # the demo keeps the linear stand-in (its time budget)
            assert data.magnify == 15.0
            continue
        settings = MagnifySettings(**vars(data.magnify))
        assert settings == MagnifySettings("phase", 15.0, temporal="ideal", sigma=0.0), path.name
        for name in data.datasets:
            for fps in frame_rates(name).values():
                settings.check(fps, data.image_size)
