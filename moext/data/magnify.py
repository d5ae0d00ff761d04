"""Motion magnification of clips: phase-based (Riesz pyramid) and linear (Eulerian).

Both methods take one clip, ``frames`` (T, H, W) float in [0, 1] (grey; colour through
:func:`magnify_luminance`), and return the magnified clip, same shape, clipped to [0, 1]. They
run on the device of ``frames`` and are batched over the frames; the first frame is the onset.

**Phase-based** (:func:`magnify_phase`; Wadhwa, Rubinstein, Durand, Freeman, "Riesz pyramids for
fast phase-based video magnification", ICCP 2014). A small sub-pixel motion of an image
structure is a change of its local phase; amplifying the temporally band-passed phase change
moves the structure further without amplifying its noise the way a linear method does:

1. Each frame becomes a Laplacian pyramid (Burt-Adelson, 5-tap binomial filters; the paper
   allows any invertible non-oriented pyramid and designs a faster one) of ``levels`` band
   levels and a low-pass residual, which is never changed.
2. Each band level I gets its Riesz transform (R1, R2) = IFFT(-i (f_x, f_y) / |f| FFT(I)),
   exactly, in the frequency domain (edges mirrored first). (I, R1, R2) is a quaternion
   ``A (cos phi, sin phi cos theta, sin phi sin theta)``: local amplitude A, phase phi and
   orientation theta. The paper approximates R with three-tap differences ``[0.5, 0, -0.5]``,
   accurate in the narrow bands of its own pyramid; on a Burt-Adelson pyramid they
   under-magnify (measured: 0.84-0.91 of ``1 + alpha`` on gratings of 8-32 px period, against
   0.97-1.01 with the exact transform), so we pay two small FFTs per level instead.
3. The phase change between consecutive frames is the quaternion ``q_t conj(q_{t-1})``; its
   ``phi (cos theta, sin theta)`` summed over time from the onset gives the phase signal
   (2 components per pixel), unwrapped, 0 at the onset.
4. The phase signal is band-passed in time, ``low`` to ``high`` Hz at the clip's ``fps``:
   ``temporal="butter"`` (the paper's real-time filter: a first-order Butterworth band-pass,
   causal, at rest before the onset) or ``"ideal"`` (an offline zero-phase FFT mask over the
   clip, the offline phase-based method's kind of filter; it removes the clip's mean phase, so
   the onset frame moves too).
5. Amplitude-weighted spatial smoothing, ``blur(A phi) / blur(A)`` with a Gaussian of ``sigma``
   pixels at every level (the paper's noise reduction; its tutorial code uses sigma 2).
6. Each coefficient is phase-shifted by ``alpha`` times the filtered phase, ``Re(exp(alpha
   phi~) q) = cos|s| I - sin|s| (s_x R1 + s_y R2) / |s|``, ``s = alpha phi~``, and the pyramid is
   collapsed. With ``attenuate`` the shift is ``(1 + alpha) phi~ - phi`` instead: the motion
   outside the band is removed (the phase-based code's "attenuate other frequencies").

A motion delta(t) inside the band comes out as ``(1 + alpha) delta(t)`` where the image has one
dominant orientation at a scale (an edge, a grating) and ``(1 + alpha) delta`` stays well below
half the wavelength of the structures that carry it; larger motions smear rather than move, as
in every phase-based method. Where several orientations overlap within a level's support
(corners, blobs, textures) and in the low-pass residual, less is magnified, and the smoothing of
step 5 lowers it further: measured on the generated faces, 0.75-1.05 of ``1 + alpha`` with
``sigma=0`` and 0.55-0.86 with 2, letting through 2.3-4.5 and 1.3-1.6 grey levels per grey
level of sensor noise at alpha 10, where the linear method lets through 14
(docs/magnification.md).

**Linear** (:func:`magnify_linear`, the clip DataModule's stand-in): ``I_t + alpha (I_t -
I_onset)``, clipped: Eulerian magnification with every frequency in the band and the onset as
the reference. It amplifies sensor noise too, by about ``sqrt((1 + alpha)^2 + alpha^2)`` (the
frame's noise and, alpha times, the onset's).

:class:`MagnifySettings` holds a method's settings (``magnify: {method, alpha, ...}`` in a
config), checks them against a database's frame rate and crop size, and names what a cache
entry must be keyed on; :func:`magnify` applies them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import functional as F

#: Version of the magnification algorithms; bump it when a change alters their output (it is
#: part of :meth:`MagnifySettings.key`, so cached magnified clips are rebuilt).
MAGNIFY_VERSION = 1
#: The coarsest band level of the phase pyramid keeps at least this many pixels per side.
MIN_LEVEL_SIDE = 8
METHODS = ("linear", "phase")
TEMPORAL_FILTERS = ("butter", "ideal")
#: ITU-R 601 luma weights (the Y of YIQ and of YCbCr alike).
LUMA = (0.299, 0.587, 0.114)

#: Pixels mirrored around a band level before its Riesz transform (FFT).
RIESZ_PAD = 8


@dataclass(frozen=True)
class MagnifySettings:
    """How a clip is magnified (``magnify: {method: phase, alpha: 15, ...}``).

    Attributes:
        method: ``"phase"`` (:func:`magnify_phase`) or ``"linear"`` (:func:`magnify_linear`).
        alpha: magnification factor (> 0); AKMNet's paper: 15, phase-based.
        low, high: the temporal band in Hz (phase only), inside (0, fps / 2).
        levels: band levels of the phase pyramid; None: as many as the crop allows
            (:func:`max_levels`).
        attenuate: phase only: also remove the motion outside the band.
        sigma: phase only: amplitude-weighted smoothing of the phase, pixels (0: none).
        temporal: phase only: ``"butter"`` or ``"ideal"`` band-pass (module docstring).
    """

    method: str = "phase"
    alpha: float = 15.0
    low: float = 0.3
    high: float = 12.0
    levels: int | None = None
    attenuate: bool = False
    sigma: float = 2.0
    temporal: str = "butter"

    def check(self, fps: float | None, size: int | tuple[int, int]) -> None:
        """Raise ValueError (one line) when these settings cannot magnify a database's clips.

        Args:
            fps: the database's frame rate (None: unknown).
            size: the crop's side, or (H, W).
        """
        for name in ("alpha", "low", "high", "sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"magnify.{name} must be a number, got {value!r}")
        levels = self.levels
        if levels is not None and (
            isinstance(levels, bool) or not isinstance(levels, numbers.Integral)
        ):
            raise ValueError(f"magnify.levels must be a whole number or None, got {levels!r}")
        if not isinstance(self.attenuate, bool):
            raise ValueError(f"magnify.attenuate must be true or false, got {self.attenuate!r}")
        if self.method not in METHODS:
            raise ValueError(f"magnify.method must be one of {METHODS}, got {self.method!r}")
        if not self.alpha > 0:
            raise ValueError(f"magnify.alpha must be > 0, got {self.alpha}")
        if not math.isfinite(self.alpha):
            raise ValueError(f"magnify.alpha must be a finite number, got {self.alpha}")
        if self.method == "linear":
            return
        if self.temporal not in TEMPORAL_FILTERS:
            raise ValueError(
                f"magnify.temporal must be one of {TEMPORAL_FILTERS}, got {self.temporal!r}"
            )
        if fps is None:
            raise ValueError(
                "magnify: the frame rate is unknown (fps None); phase magnification needs it "
                "for its band (low, high in Hz)"
            )
        if not fps > 0:
            raise ValueError(f"magnify: the frame rate must be > 0, got fps {fps}")
        if not 0 < self.low < self.high < fps / 2:
            raise ValueError(
                f"magnify: the band low {self.low} - high {self.high} Hz must satisfy "
                f"0 < low < high < fps / 2 = {fps / 2:g}"
            )
        if not 0 <= self.sigma < math.inf:
            raise ValueError(f"magnify.sigma must be >= 0 and finite, got {self.sigma}")
        allowed = max_levels(size)
        if self.levels is not None and not 1 <= self.levels <= allowed:
            raise ValueError(
                f"magnify.levels={self.levels}: a {_size_text(size)} crop allows 1 to {allowed} "
                f"(the coarsest band level keeps {MIN_LEVEL_SIDE} px)"
            )
        if allowed < 1:
            raise ValueError(
                f"magnify: a {_size_text(size)} crop is too small for the phase pyramid "
                f"(at least {MIN_LEVEL_SIDE} px a side)"
            )

    def key(self) -> dict[str, Any]:
        """What a magnified clip depends on (for cache keys).

        The method's own fields and :data:`MAGNIFY_VERSION`; the phase-only fields are left out
        for ``linear``.
        """
        fields = asdict(self)
        if self.method == "linear":
            fields = {"method": self.method, "alpha": self.alpha}
        return {**fields, "version": MAGNIFY_VERSION}


def _size_text(size: int | tuple[int, int]) -> str:
    return f"{size} px" if isinstance(size, int) else f"{size[0]}x{size[1]} px"


def max_levels(size: int | tuple[int, int]) -> int:
    """The most band levels a crop allows: the coarsest keeps :data:`MIN_LEVEL_SIDE` px.

    128 and 224 px allow 5, 64 px 4, 32 px 3; below 8 px, 0.
    """
    side = min(size) if isinstance(size, tuple | list) else int(size)
    if side < MIN_LEVEL_SIDE:
        return 0
    return int(math.floor(math.log2(side / MIN_LEVEL_SIDE))) + 1


def magnify(frames: Tensor, settings: MagnifySettings, fps: float | None) -> Tensor:
    """Magnify a clip as ``settings`` say (checked first).

    Args:
        frames: (T, H, W) grey, or (T, H, W, 3) / (T, 3, H, W) RGB, float in [0, 1].
        settings: the method and its settings.
        fps: the clip's frame rate (phase only; None for linear is fine).

    Returns:
        The magnified clip, same shape, in [0, 1].
    """
    if frames.ndim == 3 or frames.shape[-1] == 3:
        size = (int(frames.shape[1]), int(frames.shape[2]))
    else:
        size = (int(frames.shape[-2]), int(frames.shape[-1]))
    settings.check(fps, size)
    if settings.method == "linear":
        return magnify_linear(frames, settings.alpha)

    def grey(y: Tensor) -> Tensor:
        return magnify_phase(
            y,
            settings.alpha,
            settings.low,
            settings.high,
            fps,  # type: ignore[arg-type]  # checked above
            settings.levels,
            attenuate=settings.attenuate,
            sigma=settings.sigma,
            temporal=settings.temporal,  # type: ignore[arg-type]
        )

    return grey(frames) if frames.ndim == 3 else magnify_luminance(frames, grey)


def magnify_linear(frames: Tensor, alpha: float) -> Tensor:
    """Linear magnification of each frame's change from the first (the onset).

    Args:
        frames: (T, ...) float in [0, 1]: grey (T, H, W) or colour, any trailing shape.
        alpha: magnification factor (0: unchanged).

    Returns:
        (T, ...): ``clip(I_t + alpha (I_t - I_0), 0, 1)``; the clip DataModule's stand-in
        (``magnify_clips``) on one unpadded clip.
    """
    if alpha == 0 or len(frames) == 0:
        return frames
    return (frames + alpha * (frames - frames[:1])).clamp_(0, 1)


def magnify_luminance(
    frames: Tensor,
    magnify_grey: Callable[[Tensor], Tensor],
    channels: Literal["last", "first"] | None = None,
) -> Tensor:
    """Magnify an RGB clip through its luminance, keeping its chroma.

    Y = 0.299 R + 0.587 G + 0.114 B (YIQ's and YCbCr's Y) is magnified; I, Q (or Cb, Cr) are
    kept. Both colour spaces rebuild RGB from Y with the weights (1, 1, 1), so keeping the chroma
    means adding the change of Y to every channel.

    Args:
        frames: (T, H, W, 3) or (T, 3, H, W) float in [0, 1].
        magnify_grey: (T, H, W) -> (T, H, W), e.g. ``lambda y: magnify_phase(y, 15, ...)``.
        channels: where the 3 channels are; None: the one of axes 1 and -1 that has size 3 (a
            shape with both must say).

    Returns:
        The magnified clip, same shape, in [0, 1].
    """
    shape = tuple(frames.shape)
    if channels is None and frames.ndim == 4 and (shape[-1] == 3) != (shape[1] == 3):
        channels = "last" if shape[-1] == 3 else "first"
    axis = -1 if channels == "last" else 1
    if frames.ndim != 4 or channels is None or shape[axis] != 3:
        raise ValueError(
            f"a colour clip is (T, H, W, 3) or (T, 3, H, W), got {shape}"
            + (" (ambiguous: say channels='last' or 'first')" if channels is None else "")
        )
    weights = frames.new_tensor(LUMA)
    weights = weights if channels == "last" else weights.view(3, 1, 1)
    luma = (frames * weights).sum(axis)
    change = magnify_grey(luma) - luma
    return (frames + change.unsqueeze(axis)).clamp_(0, 1)


# --- phase-based magnification ------------------------------------------------------------------


def magnify_phase(
    frames: Tensor,
    alpha: float,
    low: float,
    high: float,
    fps: float,
    levels: int | None = None,
    *,
    attenuate: bool = False,
    sigma: float = 2.0,
    temporal: Literal["butter", "ideal"] = "butter",
) -> Tensor:
    """Phase-based motion magnification with a Riesz pyramid (module docstring).

    Args:
        frames: (T, H, W) float in [0, 1], grey; on any device.
        alpha: magnification factor.
        low: the temporal band's low edge, Hz, 0 < low < high.
        high: its high edge, Hz, high < fps / 2.
        fps: the clip's frame rate.
        levels: band levels of the pyramid (None: :func:`max_levels` of the frame size).
        attenuate: remove the motion outside the band too.
        sigma: amplitude-weighted phase smoothing, pixels (0: none).
        temporal: ``"butter"`` (causal first-order Butterworth) or ``"ideal"`` (FFT mask).

    Returns:
        (T, H, W) magnified, clipped to [0, 1], the dtype of ``frames``.
    """
    if frames.ndim != 3:
        raise ValueError(f"magnify_phase: frames must be (T, H, W) grey, got {tuple(frames.shape)}")
    t, h, w = frames.shape
    MagnifySettings("phase", alpha, low, high, levels, attenuate, sigma, temporal).check(
        fps, (h, w)
    )
    if t < 2:
        return frames.clone()
    levels = levels or max_levels((h, w))
    x = frames.to(torch.float64 if frames.dtype == torch.float64 else torch.float32)
    gauss = [x]  # Gaussian pyramid, (T, h_k, w_k)
    for _ in range(levels):
        gauss.append(_reduce(gauss[-1]))
    bandpass = _temporal_filter(temporal, low, high, fps, t)
    out = gauss[-1]  # the low-pass residual, unchanged
    for k in reversed(range(levels)):
        size = (gauss[k].shape[-2], gauss[k].shape[-1])
        band = gauss[k] - _expand(gauss[k + 1], size)
        out = _expand(out, size).add_(_magnify_band(band, alpha, bandpass, attenuate, sigma))
    return out.clamp_(0, 1).to(frames.dtype)


def _reduce(x: Tensor) -> Tensor:
    """Burt-Adelson REDUCE: 5-tap binomial blur, every second pixel (mirrored edges).

    Shapes: (N, H, W) -> (N, ceil(H / 2), ceil(W / 2)).
    """
    h, w = x.shape[-2:]
    p = F.pad(x, (2, 2, 2, 2), mode="reflect")
    wo, ho = 2 * ((w + 1) // 2), 2 * ((h + 1) // 2)
    c = [p[..., k : k + wo : 2] for k in range(5)]
    rows = (c[0] + c[4]).add_(c[1] + c[3], alpha=4).add_(c[2], alpha=6)
    r = [rows[..., k : k + ho : 2, :] for k in range(5)]
    return (r[0] + r[4]).add_(r[1] + r[3], alpha=4).add_(r[2], alpha=6).div_(256)


def _expand(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Burt-Adelson EXPAND to ``size``: zeros between the samples, the binomial blur times 4.

    Computed as its two phases (even: (1, 6, 1) / 8, odd: (1, 1) / 2; mirrored edges).

    Shapes: (N, h, w) -> (N, *size), ``size`` at most (2h, 2w).
    """
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    even = (p[..., :-2] + 6 * p[..., 1:-1] + p[..., 2:]) / 8
    odd = (p[..., 1:-1] + p[..., 2:]) / 2
    cols = torch.stack([even, odd], dim=-1).flatten(-2)[..., : size[1]]  # (N, h + 2, W)
    even = (cols[..., :-2, :] + 6 * cols[..., 1:-1, :] + cols[..., 2:, :]) / 8
    odd = (cols[..., 1:-1, :] + cols[..., 2:, :]) / 2
    return torch.stack([even, odd], dim=-2).flatten(-3, -2)[..., : size[0], :]


def _fast_length(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3 and 5 (a fast FFT size)."""
    m = n
    while True:
        k = m
        for prime in (2, 3, 5):
            while k % prime == 0:
                k //= prime
        if k == 1:
            return m
        m += 1


def _mirror(x: Tensor, pad: int) -> tuple[Tensor, int]:
    """Mirror (N, C, H, W) by ``pad`` pixels and more, to a fast FFT size.

    By ``pad`` pixels before its top and left edges and by a few more after its bottom and right
    ones, to a fast FFT size (less where a side is too short).

    Returns:
        The padded tensor and the pad before the edges (the image starts there).
    """
    h, w = x.shape[-2:]
    pad = min(pad, h - 1, w - 1)
    after_h = min(_fast_length(h + 2 * pad) - h - pad, h - 1)
    after_w = min(_fast_length(w + 2 * pad) - w - pad, w - 1)
    return F.pad(x, (pad, after_w, pad, after_h), mode="reflect"), pad


def _frequencies(h: int, w: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Spatial frequencies (cycles per pixel) of an ``rfft2`` of (h, w): (h, 1) and (1, w//2+1)."""
    fy = torch.fft.fftfreq(h, dtype=like.dtype, device=like.device)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=like.dtype, device=like.device)[None, :]
    return fy, fx


def _riesz(band: Tensor, pad: int = RIESZ_PAD) -> Tensor:
    """The Riesz transform of a band level, in the frequency domain.

    The image is mirrored by ``pad`` pixels first, so its edges do not wrap around:
    R_j = IFFT(-i f_j / |f| FFT(I)).

    Shapes: (T, h, w) -> (T, 2, h, w): R1 (across), R2 (down).
    """
    h, w = band.shape[-2:]
    x, p = _mirror(band[:, None], pad)
    fy, fx = _frequencies(*x.shape[-2:], x)
    radius = torch.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1
    transfer = torch.stack([fx / radius, fy / radius])  # (2, H, W // 2 + 1)
    out = torch.fft.irfft2(torch.fft.rfft2(x) * (-1j * transfer), s=x.shape[-2:])
    return out[..., p : p + h, p : p + w]


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of (N, C, h, w), ``sigma`` pixels, in the frequency domain (mirrored edges)."""
    h, w = x.shape[-2:]
    padded, p = _mirror(x, math.ceil(3 * sigma))
    fy, fx = _frequencies(*padded.shape[-2:], x)
    transfer = torch.exp(-2 * (math.pi * sigma) ** 2 * (fx * fx + fy * fy))
    out = torch.fft.irfft2(torch.fft.rfft2(padded) * transfer, s=padded.shape[-2:])
    return out[..., p : p + h, p : p + w]


def _magnify_band(
    band: Tensor,
    alpha: float,
    bandpass: Callable[[Tensor], Tensor],
    attenuate: bool,
    sigma: float,
) -> Tensor:
    """Steps 2-6 of the module docstring on one band level: (T, h, w) -> (T, h, w)."""
    riesz = _riesz(band)  # (T, 2, h, w)
    r1, r2 = riesz[:, 0], riesz[:, 1]
    # q_t conj(q_{t-1}), t >= 1: real part (T - 1, h, w) and imaginary parts (T - 1, 2, h, w)
    real = band[1:] * band[:-1] + r1[1:] * r1[:-1] + r2[1:] * r2[:-1]
    im = band[:-1, None] * riesz[1:] - band[1:, None] * riesz[:-1]
    norm = torch.hypot(im[:, 0], im[:, 1])
    turn = torch.atan2(norm, real)  # phi of each step, in [0, pi]
    turn /= norm.clamp_min(torch.finfo(band.dtype).tiny)  # im / |im| = (cos theta, sin theta)
    steps = im.mul_(turn[:, None])  # phi (cos theta, sin theta) of each step
    phase = torch.cat([torch.zeros_like(steps[:1]), steps.cumsum_(0)])  # from the onset
    filtered = bandpass(phase)
    if sigma > 0:
        amplitude = torch.sqrt(band * band + r1 * r1 + r2 * r2)[:, None]
        weighted = _gaussian_blur(torch.cat([filtered * amplitude, amplitude], dim=1), sigma)
        filtered = weighted[:, :2] / weighted[:, 2:].add_(torch.finfo(band.dtype).eps)
    shift = filtered.mul_(1 + alpha).sub_(phase) if attenuate else filtered.mul_(alpha)
    s1, s2 = shift[:, 0], shift[:, 1]
    size = torch.hypot(s1, s2)
    # sin|s| / |s| (s = 0 where |s| = 0, so the clamp changes nothing there)
    sinc = torch.sin(size).div_(size.clamp_min(torch.finfo(band.dtype).tiny))
    return torch.cos(size).mul_(band).sub_(sinc.mul_(s1 * r1 + s2 * r2))


def butter_bandpass(low: float, high: float, fps: float) -> tuple[float, float, float]:
    """A first-order Butterworth band-pass (two poles).

    As ``scipy.signal.butter(1, [low, high], "bandpass", fs=fps)``: bilinear transform of
    ``B s / (s^2 + B s + W0^2)`` at pre-warped edges.

    Returns:
        ``(b0, a1, a2)``: ``y_t = b0 (x_t - x_{t-2}) - a1 y_{t-1} - a2 y_{t-2}`` (b1 = 0, b2 =
        -b0, a0 = 1).
    """
    k = 2 * fps
    w1, w2 = k * math.tan(math.pi * low / fps), k * math.tan(math.pi * high / fps)
    bw, w0_sq = w2 - w1, w1 * w2
    a0 = k * k + bw * k + w0_sq
    return bw * k / a0, (2 * w0_sq - 2 * k * k) / a0, (k * k - bw * k + w0_sq) / a0


def _temporal_filter(
    kind: str, low: float, high: float, fps: float, length: int
) -> Callable[[Tensor], Tensor]:
    """The band-pass along dim 0 of a (T, ...) tensor."""
    if kind == "ideal":

        def ideal(x: Tensor) -> Tensor:
            freqs = torch.fft.rfftfreq(length, d=1 / fps, device=x.device)
            keep = ((freqs >= low) & (freqs <= high)).to(x.dtype)
            spectrum = torch.fft.rfft(x, dim=0)
            keep = keep.view(-1, *([1] * (x.ndim - 1)))
            return torch.fft.irfft(spectrum * keep, n=length, dim=0)

        return ideal

    b0, a1, a2 = butter_bandpass(low, high, fps)

    def butter(x: Tensor) -> Tensor:
        # direct form, at rest before the onset (x_{-1} = x_{-2} = y_{-1} = y_{-2} = 0):
        # y_t = b0 (x_t - x_{t-2}) - a1 y_{t-1} - a2 y_{t-2}, the recursion in place
        y = x.clone()
        y[2:] -= x[:-2]
        y *= b0
        for t in range(1, length):
            y[t].add_(y[t - 1], alpha=-a1)
            if t >= 2:
                y[t].add_(y[t - 2], alpha=-a2)
        return y

    return butter
