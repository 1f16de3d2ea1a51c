"""The dermoscopy photograph of a lesion: skin, the posed lesion, hair, lighting, vignetting, blur and noise."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from melanoma_lit.data.synthetic.lesions import Lesion
from melanoma_lit.data.synthetic.palette import BLACK, jittered, mix

# Fitzpatrick I-VI as dermoscopy shows them, and how often each appears.
_SKIN_TONES = np.array(
    [
        (0.97, 0.83, 0.81),
        (0.94, 0.77, 0.71),
        (0.86, 0.67, 0.57),
        (0.73, 0.54, 0.43),
        (0.55, 0.39, 0.31),
        (0.38, 0.27, 0.22),
    ]
)
_SKIN_TONE_WEIGHTS = np.array([0.25, 0.35, 0.20, 0.10, 0.06, 0.04])


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _lowres_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a small random grid upsampled bicubically."""
    h, w = shape
    grid = rng.uniform(-1, 1, (max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))))
    return np.asarray(Image.fromarray(grid.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BICUBIC))


def _texture(waves: np.ndarray, dx: np.ndarray, dy: np.ndarray, angle: float, scale: float) -> np.ndarray:
    """Sum of plane waves in [-1, 1] over the pixel grid ``dy x dx`` (lesion units, rotated by ``angle``).

    Each wave is separable, cos(a x + b y + p) = cos(a x) cos(b y + p) - sin(a x) sin(b y + p), so the
    sum is one small matrix product. Waves finer than the pixels fade out instead of aliasing.
    """
    cos, sin = math.cos(angle), math.sin(angle)
    fx, fy, phase = waves.T
    a, b = 2 * np.pi * (fx * cos - fy * sin), 2 * np.pi * (fx * sin + fy * cos)
    visible = np.clip((scale / np.maximum(np.hypot(fx, fy), 1e-6) - 2) / 4, 0, 1) / math.sqrt(2 * len(waves))
    rows = np.outer(dy, b) + phase
    by_row = np.hstack([visible * np.cos(rows), -visible * np.sin(rows)]).astype(np.float32)
    by_column = np.vstack([np.cos(np.outer(a, dx)), np.sin(np.outer(a, dx))]).astype(np.float32)
    return np.clip(np.einsum("hk,kw->hw", by_row, by_column), -1, 1)  # no BLAS threads in workers


def _skin(rng: np.random.Generator, tone: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mottle = 0.04 * _lowres_noise(rng, shape, 6)
    redness = 0.05 * np.clip(_lowres_noise(rng, shape, 5), 0, 1)
    fine = 0.025 * _lowres_noise(rng, shape, max(4, min(shape) // 3))
    skin = tone.astype(np.float32) * (1 + mottle + fine)[..., None]
    skin[..., 1:] *= (1 - redness)[..., None]
    return skin


def _draw_lesion(
    lesion: Lesion,
    canvas: np.ndarray,
    centre: np.ndarray,
    angle: float,
    scale: float,
    darken: float,
    rng: np.random.Generator,
) -> None:
    """Composite the lesion onto ``canvas`` (H, W, 3) in place; ``scale`` is pixels per lesion unit."""
    h, w, _ = canvas.shape
    reach = lesion.extent() * scale + 2
    x0, y0 = (max(0, int(c - reach)) for c in centre)
    x1, y1 = min(w, int(centre[0] + reach) + 1), min(h, int(centre[1] + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - float(centre[0])) / scale
    dy = (np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - float(centre[1])) / scale
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # lesion frame
    texture = _texture(lesion.waves, dx, dy[:, 0], angle, scale)
    grain = _lowres_noise(rng, u.shape, max(2, round(max(u.shape) * 24 / scale)))  # isotropic, photo-specific

    rho = lesion.rho(u, v)
    inside = _smoothstep((1 - rho + 0.15 * lesion.edge * texture) / lesion.edge)
    alpha = lesion.opacity * inside

    colour = lesion.base[None, None, :] * (1 + lesion.mottle * texture + 0.5 * lesion.mottle * grain)[..., None]
    for blob in lesion.blobs:
        bx, by = (float(c) for c in blob.centre)
        px, py = (cos * bx - sin * by) * scale + centre[0] - x0, (sin * bx + cos * by) * scale + centre[1] - y0
        reach = 3 * blob.sigma * scale + 1
        window = np.s_[
            max(0, int(py - reach)) : max(0, int(py + reach) + 1), max(0, int(px - reach)) : max(0, int(px + reach) + 1)
        ]
        d2 = ((u[window] - bx) ** 2 + (v[window] - by) ** 2) / (2 * blob.sigma**2)
        weight = blob.strength * np.exp(-d2) * np.clip(1 + blob.ragged * texture[window], 0, 1.5)
        weight = (np.clip(weight, 0, 1) * inside[window])[..., None]
        colour[window] = colour[window] * (1 - weight) + blob.colour * weight
    if lesion.network is not None:
        net = lesion.network
        cell_px = scale / net.frequency
        contrast = net.darkness * np.clip((cell_px - 2) / 4, 0, 1)  # optics blur nets finer than the pixels
        if contrast > 0:
            lattice = sum(
                np.cos(2 * np.pi * net.frequency * (math.cos(t) * u + math.sin(t) * v) + phase + 1.5 * texture)
                for t, phase in zip(net.angle + np.array([0, 2, 4]) * np.pi / 3, net.phases, strict=True)
            )  # honeycomb: bright holes at the maxima, connected dark lines where it is low
            lines = _smoothstep((0.2 - lattice) / 0.8) * np.clip(0.6 + 0.6 * grain, 0, 1)
            if net.ring is None:
                lines = lines * _smoothstep((1.05 - rho) / 0.5)  # fades towards the periphery
            else:
                lines = lines * _smoothstep((rho - 0.4 * net.ring) / (0.6 * net.ring))
            weight = (contrast * lines * inside)[..., None]
            colour = colour * (1 - weight) + net.colour * weight

    if lesion.dots or lesion.lines:
        prim_colour, prim_mask = _draw_primitives(lesion, (x1 - x0, y1 - y0), centre - (x0, y0), angle, scale)
        colour = colour * (1 - prim_mask[..., None]) + prim_colour * prim_mask[..., None]
        alpha = np.maximum(alpha, prim_mask * lesion.opacity)

    colour = np.clip(colour, 0, 1) * darken
    region = canvas[y0:y1, x0:x1]
    canvas[y0:y1, x0:x1] = region * (1 - alpha[..., None]) + colour * alpha[..., None]


def _draw_primitives(
    lesion: Lesion, size: tuple[int, int], centre: np.ndarray, angle: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Dots and lines drawn with PIL at 2x then downsampled: antialiased at any image size."""
    ss = 2
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def to_px(points: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(points) @ rot.T * scale + centre) * ss

    big = (size[0] * ss, size[1] * ss)
    rgb, mask = Image.new("RGB", big), Image.new("L", big)
    draw_rgb, draw_mask = ImageDraw.Draw(rgb), ImageDraw.Draw(mask)
    for points, width, colour in lesion.lines:
        xy = [tuple(p) for p in to_px(points)]
        px = max(1, round(width * scale * ss))
        draw_rgb.line(xy, fill=tuple(int(c * 255) for c in colour), width=px, joint="curve")
        draw_mask.line(xy, fill=255, width=px, joint="curve")
    for x, y, radius, colour in lesion.dots:
        cx, cy = to_px(np.array([x, y]))[0]
        rad = max(0.75, radius * scale * ss)
        box = (cx - rad, cy - rad, cx + rad, cy + rad)
        draw_rgb.ellipse(box, fill=tuple(int(c * 255) for c in colour))
        draw_mask.ellipse(box, fill=255)
    rgb = rgb.resize(size, Image.Resampling.BOX)
    mask = mask.resize(size, Image.Resampling.BOX)
    colour = np.asarray(rgb, dtype=np.float32) / 255
    weight = np.asarray(mask, dtype=np.float32) / 255
    colour = colour / np.maximum(weight, 1e-3)[..., None]  # un-premultiply the black background
    return np.clip(colour, 0, 1), weight


def _draw_hair(rng: np.random.Generator, canvas: np.ndarray) -> None:
    h, w, _ = canvas.shape
    ss = 2
    mask = Image.new("L", (w * ss, h * ss))
    draw = ImageDraw.Draw(mask)
    short = min(h, w)
    for _ in range(int(rng.integers(1, 12))):
        start = rng.uniform(0, 1, 2) * (w, h)
        heading = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.4, 1.5) * short
        bend = np.cumsum(rng.normal(rng.normal(0, 0.1), 0.05, 12))
        steps = np.column_stack([np.cos(heading + bend), np.sin(heading + bend)]) * length / 12
        points = np.vstack([start, start + np.cumsum(steps, axis=0)]) * ss
        width = max(1, round(rng.uniform(0.005, 0.012) * short * ss))
        draw.line([tuple(p) for p in points], fill=int(rng.uniform(200, 255)), width=width, joint="curve")
    weight = np.asarray(mask.resize((w, h), Image.Resampling.BOX), dtype=np.float32)[..., None] / 255
    colour = jittered(rng, BLACK, 0.1) * rng.uniform(0.5, 1.6)
    canvas *= 1 - weight
    canvas += weight * colour


def _lighting(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    h, w, _ = canvas.shape
    half = min(h, w) / 2
    px = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / half
    py = (np.arange(h, dtype=np.float32)[:, None] + 0.5 - h / 2) / half
    direction = rng.uniform(0, 2 * np.pi)
    gain = rng.uniform(0.88, 1.1) * (1 + rng.uniform(0, 0.12) * (math.cos(direction) * px + math.sin(direction) * py))
    gain = gain * (1 - rng.uniform(0, 0.12) * (px**2 + py**2) / 2)  # dermoscope fall-off
    lit = canvas * gain[..., None] * rng.normal(1.0, 0.03, 3).astype(np.float32)
    lit = np.clip(lit, 0, 1) ** rng.uniform(0.9, 1.1)
    if rng.random() < 0.35:  # dark circular corners of the dermoscope
        radius = rng.uniform(0.75, 1.0) * math.hypot(w, h) / 2 / half
        ox, oy = (float(o) for o in rng.normal(0, 0.04, 2))
        outside = _smoothstep((np.hypot(px - ox, py - oy) - radius) / 0.06)
        lit = lit * (1 - outside[..., None]) + rng.uniform(0.01, 0.06) * outside[..., None]
    return lit


def photograph(lesion: Lesion, skin_tone: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """One photograph of ``lesion``: new pose, lighting, hair and noise for every view."""
    w, h = size
    half = min(w, h) / 2
    canvas = _skin(rng, skin_tone * rng.uniform(0.95, 1.05), (h, w))
    centre = np.array([w / 2, h / 2]) + rng.uniform(-0.12, 0.12, 2) * half
    darken = float(np.clip(skin_tone.mean() / _SKIN_TONES[1].mean(), 0.45, 1.0) ** 0.7)
    _draw_lesion(lesion, canvas, centre, rng.uniform(0, 2 * np.pi), half * rng.uniform(0.85, 1.15), darken, rng)
    if rng.random() < 0.3:
        _draw_hair(rng, canvas)
    canvas = _lighting(rng, canvas)
    image = Image.fromarray((canvas * 255 + 0.5).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7) * max(1.0, half / 64) ** 0.5))
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(2.0, 6.0)
    noisy = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))


def random_skin_tone(rng: np.random.Generator) -> np.ndarray:
    """A patient's skin colour, between two neighbouring Fitzpatrick types."""
    position = np.clip(rng.choice(6, p=_SKIN_TONE_WEIGHTS) + rng.uniform(-0.5, 0.5), 0, 5)
    low = int(position)
    high = min(low + 1, 5)
    return mix(_SKIN_TONES[low], _SKIN_TONES[high], position - low) * rng.normal(1.0, 0.02, 3)
