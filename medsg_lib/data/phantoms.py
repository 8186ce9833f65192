"""Deterministic synthetic chest radiographs ("phantoms"): the embedded offline default data set.

Every phantom is drawn analytically in normalised patient coordinates (``x`` from image left to image
right, ``y`` from top to bottom, both in ``[-1, 1]``), so the image, the lung mask and the infection mask come
from the same geometry and match pixel for pixel. The view is postero-anterior: the patient's right lung is on
the image left; the heart, the aortic knob and the gastric bubble are on the image right.

Anatomy: body outline with neck and shoulders, two lung fields of random shape, mediastinum, trachea,
spine with vertebral bodies, posterior and anterior ribs, clavicles, heart, hila with vessel markings,
diaphragm domes (the right one higher) and a gastric bubble. Acquisition: slight rotation, scale and shift,
exposure, contrast and gamma, blur and film-like noise. Classes (``CLASS_NAMES``):

- 0 COVID-19: bilateral, peripheral, lower-zone patchy ground-glass opacities (hazy, semi-transparent);
- 1 Non-COVID: mostly unilateral dense lobar consolidation with air bronchograms, sometimes a pleural effusion
  (a dense meniscus blunting the costophrenic angle);
- 2 Normal: clear lungs.

:func:`write_phantoms` writes them in the COVID-QU-Ex folder layout (see ``paper/PAPER.md``) with a manifest,
``phantoms.json``, that makes a second call with the same config a no-op.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from medsg_lib.config import CLASS_NAMES, CLASS_SLUGS, PhantomConfig, to_jsonable

PHANTOM_VERSION = "1"  # bump whenever the rendering changes: the manifest then no longer matches

MANIFEST_NAME = "phantoms.json"
SPLITS: tuple[str, ...] = ("Train", "Val", "Test")
LUNG_SUBSET = Path("Lung Segmentation Data", "Lung Segmentation Data")
INFECTION_SUBSET = Path("Infection Segmentation Data", "Infection Segmentation Data")
IMAGES_DIR = "images"
LUNG_MASKS_DIR = "lung masks"
INFECTION_MASKS_DIR = "infection masks"

_COVID, _NON_COVID, _NORMAL = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Phantom:
    """One synthetic radiograph and its exact masks (all ``(size, size)``, PA view)."""

    image: np.ndarray  # (size, size) uint8 in [0, 255], bright = dense
    lung_mask: np.ndarray  # (size, size) bool, the rendered lung fields
    infection_mask: np.ndarray  # (size, size) bool, lesions inside the lungs; all False for Normal


@dataclass(frozen=True)
class PhantomEntry:
    """Where one phantom of a config lives and the numbers that regenerate it alone."""

    split: str  # one of SPLITS
    label: int  # index into CLASS_NAMES
    index: int  # position within (split, label); part of the seed
    name: str  # file name, unique within a class across splits


# --------------------------------------------------------------------------------------------- small helpers


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 below ``edge0``, 1 above ``edge1`` (or the reverse when ``edge0 > edge1``), smooth in between."""
    t = np.clip((x - edge0) * (1.0 / (edge1 - edge0)), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _cylinder(d: np.ndarray, half_width: float) -> np.ndarray:
    """Projected thickness of a cylinder (a bone seen side-on) at distance ``d`` from its axis, in [0, 1]."""
    return np.sqrt(np.clip(1.0 - (d * (1.0 / half_width)) ** 2, 0.0, 1.0))


def _gauss2(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Elliptic Gaussian bump with peak 1 at (cx, cy)."""
    return np.exp(-(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2))


@dataclass(frozen=True, eq=False)
class _Frame:
    """Pixel grid of one image and its patient coordinates after a slight rotation, scaling and shift."""

    size: int
    matrix: np.ndarray  # (2, 3): (y, x) = matrix @ (row, col, 1)
    x: np.ndarray  # (size, size) patient x, image left -> right
    y: np.ndarray  # (size, size) patient y, top -> bottom

    def blur(self, a: np.ndarray, sigma: float) -> np.ndarray:
        """Gaussian blur with ``sigma`` in patient units (1 unit = half the image width)."""
        return ndimage.gaussian_filter(a, sigma * self.size / 2.0, mode="nearest", truncate=3.0)


def _frame(rng: np.random.Generator, size: int) -> _Frame:
    angle = np.deg2rad(rng.uniform(-4.0, 4.0))
    scale = rng.uniform(0.93, 1.03)
    shift_x, shift_y = rng.uniform(-0.04, 0.04), rng.uniform(-0.05, 0.03)
    c, s = np.cos(angle) / scale, np.sin(angle) / scale
    step, start = 2.0 / size, 1.0 / size - 1.0  # pixel index -> [-1, 1] (pixel centres)
    # y = -s * px + c * py - shift_y ; x = c * px + s * py - shift_x
    matrix = np.array(
        [
            [c * step, -s * step, (c - s) * start - shift_y],
            [s * step, c * step, (c + s) * start - shift_x],
        ]
    )
    index = np.arange(size, dtype=np.float64)
    rows, cols = np.meshgrid(index, index, indexing="ij")
    y = matrix[0, 0] * rows + matrix[0, 1] * cols + matrix[0, 2]
    x = matrix[1, 0] * rows + matrix[1, 1] * cols + matrix[1, 2]
    # float32 halves the memory traffic of the ~200 whole-image operations that follow
    return _Frame(size=size, matrix=matrix, x=x.astype(np.float32), y=y.astype(np.float32))


_NOISE_EXTENT = 1.3  # random fields cover [-1.3, 1.3]^2 in patient units
_NOISE_UPSAMPLE = 3


def _noise(rng: np.random.Generator, cells: int, frame: _Frame) -> np.ndarray:
    """Smooth random field of about unit variance with ``cells`` features across the patient.

    A ``cells``-sized random grid is spline-upsampled to a fixed fine grid, then sampled bilinearly at the
    pixels: the same ``rng`` state gives the same field at any image size.
    """
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    fine = ndimage.zoom(grid, _NOISE_UPSAMPLE, order=3, mode="nearest")
    a = (fine.shape[0] - 1) / (2.0 * _NOISE_EXTENT)  # patient units -> fine grid index
    return ndimage.affine_transform(
        fine,
        a * frame.matrix[:, :2],
        offset=a * (frame.matrix[:, 2] + _NOISE_EXTENT),
        output_shape=(frame.size, frame.size),
        order=1,
        mode="nearest",
    )


def _ridges(rng: np.random.Generator, cells: int, frame: _Frame, sharpness: float) -> np.ndarray:
    """Thin branching lines (vessels, bronchi) where a smooth field crosses zero, in [0, 1]."""
    return np.exp(-((_noise(rng, cells, frame) * sharpness) ** 2))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 4-connected region of ``mask`` (drops slivers left between the heart and a dome)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


# --------------------------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class _Lung:
    """One lung in side coordinates: ``u`` = distance from the midline (outwards), ``y`` downwards."""

    side: int  # -1: patient's right (image left), +1: patient's left (image right)
    apex_y: float  # top of the lung
    apex_u: float  # lateral position of the apex
    lateral_u: float  # widest lateral extent
    medial_u: float  # medial border (mediastinum)
    dome_y: float  # top of the diaphragm dome
    dome_u: float  # lateral position of the dome top
    sulcus_depth: float  # how far the costophrenic angle lies below the dome top
    medial_depth: float  # how far the cardiophrenic angle lies below the dome top
    wobble: float  # amplitude of the lateral border's irregularity
    phase: float  # phase of that irregularity

    @property
    def base_y(self) -> float:
        """Lowest point of the lung (the lateral costophrenic angle)."""
        return self.dome_y + self.sulcus_depth


def _draw_lung(rng: np.random.Generator, side: int, body_w: float, dome_y: float) -> _Lung:
    return _Lung(
        side=side,
        apex_y=rng.uniform(-0.84, -0.72),
        apex_u=rng.uniform(0.28, 0.38),
        lateral_u=min(rng.uniform(0.66, 0.8), body_w - 0.1),
        medial_u=rng.uniform(0.07, 0.11),
        dome_y=dome_y,
        dome_u=rng.uniform(0.35, 0.47),
        sulcus_depth=rng.uniform(0.16, 0.28),
        medial_depth=rng.uniform(0.04, 0.12),
        wobble=rng.uniform(0.0, 0.015),
        phase=rng.uniform(0.0, 2.0 * np.pi),
    )


def _diaphragm_y(lung: _Lung, u: np.ndarray) -> np.ndarray:
    """y of the diaphragm under the lung at side coordinate ``u``: a dome, lowest at the lateral sulcus."""
    lat = np.clip((u - lung.dome_u) / (lung.lateral_u - lung.dome_u), 0.0, 1.5)
    med = np.clip((lung.dome_u - u) / (lung.dome_u - lung.medial_u), 0.0, 1.5)
    return lung.dome_y + lung.sulcus_depth * lat**2 + lung.medial_depth * med**2


def _lung_shape(lung: _Lung, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean lung field: rounded apex, convex lateral border, straight medial border, dome below."""
    u = lung.side * x
    t_lat = np.clip((y - lung.apex_y) / 0.6, 0.0, 1.0)
    t_med = np.clip((y - lung.apex_y) / 0.3, 0.0, 1.0)
    u_lat = lung.apex_u + (lung.lateral_u - lung.apex_u) * np.sqrt(t_lat) * (1.0 - 0.3 * (1.0 - t_lat) ** 2)
    u_lat = u_lat + lung.wobble * np.sin(7.0 * y + lung.phase)
    u_med = lung.apex_u - (lung.apex_u - lung.medial_u) * np.sqrt(t_med)
    return (y > lung.apex_y) & (u < u_lat) & (u > u_med) & (y < _diaphragm_y(lung, u))


@dataclass(frozen=True)
class _Heart:
    cx: float
    cy: float
    rx: float
    ry: float
    tilt: float  # radians; the apex points down and to the image right

    def radius(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Normalised elliptic radius (< 1 inside); the lower half is stretched down onto the diaphragm."""
        c, s = float(np.cos(self.tilt)), float(np.sin(self.tilt))
        dx, dy = x - self.cx, y - self.cy
        a = (c * dx + s * dy) / self.rx
        b = (-s * dx + c * dy) / self.ry
        b = np.where(b > 0, b * 0.6, b)
        return np.sqrt(a * a + b * b)


def _body_halfwidth(y: np.ndarray, neck_w: float, body_w: float, shoulder_y: float) -> np.ndarray:
    """Half-width of the body outline: the neck widening along sloping shoulders into the thorax."""
    shoulders = _smoothstep(shoulder_y - 0.35, shoulder_y + 0.1, y) ** 0.7
    return neck_w + (body_w - neck_w) * shoulders - 0.05 * np.clip(y - 0.3, 0.0, None)


def _posterior_ribs(u: np.ndarray, y: np.ndarray, first_y: float, span: float, curve: float) -> np.ndarray:
    """Ten posterior ribs: arcs leaving the spine, rising slightly, then bending down along the chest wall."""
    s = y - (first_y - 0.3 * u + curve * u * u)
    k = 10.0 * np.clip(s / span, 0.0, None) ** 0.85  # continuous rib index; spacing grows downwards
    d = np.abs(k - np.round(k))
    valid = (k < 9.5) & (s > -0.04)
    return (0.8 * _cylinder(d, 0.2) + 0.3 * np.exp(-(((d - 0.17) / 0.04) ** 2))) * valid  # cortical edges


def _anterior_ribs(u: np.ndarray, y: np.ndarray, first_y: float, span: float) -> np.ndarray:
    """Six anterior ribs: fainter bands running down and inwards from the lateral chest wall."""
    w = 0.85 - u
    s = y - (first_y + 0.5 * w - 0.3 * w * w)
    k = 6.0 * np.clip(s / span, 0.0, None)
    d = np.abs(k - np.round(k))
    return _cylinder(d, 0.22) * ((k < 5.5) & (s > -0.04)) * _smoothstep(0.25, 0.5, u)


def _clavicle(u: np.ndarray, y: np.ndarray, sternal_y: float, rise: float) -> np.ndarray:
    """One clavicle: an S-shaped bone from the sternal notch up and out to the shoulder."""
    axis = sternal_y - rise * u + 0.04 * np.sin(np.pi * u / 0.65)
    on = _smoothstep(0.04, 0.09, u) * _smoothstep(0.85, 0.7, u)
    return _cylinder(np.abs(y - axis), 0.035 + 0.015 * u) * on


def _spine(x: np.ndarray, y: np.ndarray, center_x: float, period: float, offset: float) -> np.ndarray:
    """Vertebral column: a bright band of vertebral bodies with darker discs and pedicle spots."""
    phase = (y - offset) / period
    frac = phase - np.floor(phase)
    vertebra = 1.0 - 0.4 * (2.0 * frac - 1.0) ** 4  # darker discs between the bodies
    dx = np.abs(x - center_x)
    pedicles = np.clip(1.0 - ((dx - 0.05) / 0.014) ** 2 - ((frac - 0.35) / 0.12) ** 2, 0.0, None)
    return _cylinder(dx, 0.075) * vertebra + 0.4 * pedicles


# --------------------------------------------------------------------------------------------- lesions


def _covid_lesions(rng: np.random.Generator, lungs: list[_Lung], frame: _Frame) -> np.ndarray:
    """Ground-glass opacity in [0, 1]: hazy patches in the peripheral lower zones of (usually) both lungs.

    The caller confines the field to the lungs.
    """
    x, y = frame.x, frame.y
    texture = _noise(rng, 22, frame)
    field = np.zeros_like(x)
    bilateral = rng.random() < 0.9
    only = int(rng.integers(0, 2))
    for i, lung in enumerate(lungs):
        count = int(rng.integers(3, 7))
        if not bilateral and i != only:
            count = 0
        for _ in range(count):
            by = lung.apex_y + rng.uniform(0.5, 1.0) * (lung.base_y - 0.05 - lung.apex_y)  # lower zones
            bu = lung.lateral_u - rng.uniform(0.04, 0.2)  # periphery
            weight = rng.uniform(0.6, 1.0)
            ru, rv = rng.uniform(0.07, 0.14), rng.uniform(0.08, 0.16)
            field += weight * _gauss2(lung.side * x, y, bu, by, ru, rv)
    patchy = field * (0.8 + 0.35 * texture)
    return np.clip((patchy - 0.3) / 0.6, 0.0, 1.0)


def _non_covid_lesions(
    rng: np.random.Generator, lungs: list[_Lung], frame: _Frame
) -> tuple[np.ndarray, np.ndarray]:
    """Consolidation and effusion, each in [0, 1], mostly on one side (the caller confines them to lungs)."""
    x, y = frame.x, frame.y
    texture = _noise(rng, 12, frame)
    bronchi = _ridges(rng, 10, frame, 7.0)
    pick = int(rng.integers(0, 2))
    lung = lungs[pick]
    u = lung.side * x
    this_side = u > 0.0
    lobe = int(rng.integers(0, 3))
    if lobe == 0:  # lower lobe: below an oblique fissure (sharp upper edge), denser downwards
        fissure = rng.uniform(-0.15, 0.1) + 0.4 * (u - lung.medial_u)
        region = _smoothstep(-0.03, 0.03, y - fissure) * (0.8 + 0.4 * _smoothstep(0.0, 0.4, y - fissure))
    elif lobe == 1:  # upper lobe: above a horizontal fissure
        fissure = rng.uniform(-0.2, 0.0) + 0.08 * u
        region = _smoothstep(-0.03, 0.03, fissure - y) * (0.8 + 0.3 * _smoothstep(0.0, 0.3, fissure - y))
    else:  # round (segmental) pneumonia with fuzzy margins
        cu, cy = rng.uniform(0.3, 0.5), rng.uniform(-0.25, lung.dome_y - 0.15)
        region = 1.3 * _gauss2(u, y, cu, cy, rng.uniform(0.16, 0.24), rng.uniform(0.18, 0.28))
    solid = np.clip((region * (0.85 + 0.35 * texture) - 0.3) / 0.7, 0.0, 1.0)
    solid = solid * (1.0 - 0.3 * bronchi) * this_side  # air bronchograms: darker branching lines
    if rng.random() < 0.2:  # a smaller, fainter focus in the other lung
        other = lungs[1 - pick]
        cu, cy = rng.uniform(0.35, 0.55), rng.uniform(0.0, other.dome_y - 0.05)
        blob = _gauss2(other.side * x, y, cu, cy, rng.uniform(0.1, 0.15), rng.uniform(0.1, 0.16))
        solid = solid + 0.6 * np.clip((blob * (0.85 + 0.35 * texture) - 0.3) / 0.7, 0.0, 1.0) * ~this_side
    effusion = np.zeros_like(x)
    if rng.random() < 0.4:  # pleural effusion: fluid in the costophrenic angle, meniscus rising laterally
        level = lung.dome_y + rng.uniform(0.0, 0.1)
        rise = rng.uniform(0.15, 0.35)
        t = np.clip((u - lung.dome_u + 0.1) / (lung.lateral_u - lung.dome_u + 0.1), 0.0, 1.0)
        effusion = _smoothstep(-0.03, 0.12, y - (level - rise * t**1.5)) * this_side
    return np.clip(solid, 0.0, 1.0), effusion


# --------------------------------------------------------------------------------------------- rendering


def render_phantom(rng: np.random.Generator, label: int, size: int) -> Phantom:
    """Render one synthetic postero-anterior chest radiograph of class ``label`` (index into CLASS_NAMES).

    The random draws do not depend on ``size`` (only the film grain does), so one generator state gives the
    same patient at any resolution. Returns a :class:`Phantom`: ``(size, size)`` uint8 image, bool masks.
    """
    if label not in (_COVID, _NON_COVID, _NORMAL):
        raise ValueError(f"render_phantom: label={label!r} must be 0, 1 or 2 (an index into {CLASS_NAMES})")
    if size < 16:
        raise ValueError(f"render_phantom: size={size!r} must be >= 16 pixels")
    frame = _frame(rng, size)
    x, y = frame.x, frame.y

    # Body outline and soft tissue thickness (projected thickness of an elliptic cylinder).
    body_w = rng.uniform(0.84, 0.94)
    half_w = _body_halfwidth(y, rng.uniform(0.2, 0.27), body_w, rng.uniform(-0.6, -0.45))
    tissue = np.sqrt(np.clip(1.0 - (x / half_w) ** 2, 0.0, 1.0))
    body = _smoothstep(0.0, 0.04, half_w - np.abs(x))
    density = 0.25 * body + 0.5 * tissue

    # Lungs: the heart and the aortic knob cut into the patient's left lung (image right).
    right_dome = rng.uniform(0.18, 0.32)
    left_dome = right_dome + rng.uniform(0.03, 0.1)  # the right dome is higher
    heart = _Heart(
        cx=rng.uniform(0.1, 0.16),
        cy=rng.uniform(0.12, 0.22),
        rx=rng.uniform(0.33, 0.4),
        ry=rng.uniform(0.19, 0.25),
        tilt=rng.uniform(0.3, 0.6),
    )
    heart_r = heart.radius(x, y)
    knob_y = rng.uniform(-0.42, -0.32)
    knob = _gauss2(x, y, rng.uniform(0.1, 0.14), knob_y, 0.09, 0.07)
    lungs: list[_Lung] = []
    lung_mask = np.zeros((size, size), dtype=bool)
    for side, dome in ((-1, right_dome), (1, left_dome)):
        lung = _draw_lung(rng, side, body_w, dome)
        mask = _lung_shape(lung, x, y) & (heart_r > 1.0)
        if side > 0:
            mask &= knob < 0.5
        lungs.append(lung)
        lung_mask |= _largest_component(mask)
    lung_f = lung_mask.astype(np.float32)
    lung_soft = frame.blur(lung_f, 0.018)
    lung_deep = frame.blur(lung_f, 0.1)
    density -= (0.35 * lung_soft + 0.3 * lung_deep) * tissue

    # Mediastinum, trachea, heart, aortic knob, hila and vessel markings.
    mediastinum_w = 0.16 + 0.08 * _smoothstep(-0.4, 0.2, y)  # widens down to the heart
    density += 0.12 * np.exp(-((x / mediastinum_w) ** 2)) * _smoothstep(-0.9, -0.5, y)
    trachea = _cylinder(np.abs(x - 0.01 * (y + 1.0)), 0.045) * _smoothstep(-0.2, -0.35, y)
    density -= 0.12 * trachea
    density += 0.08 * _smoothstep(1.08, 0.92, heart_r) * _smoothstep(heart.cy - heart.ry, heart.cy, y)
    density += 0.08 * knob
    hila = _gauss2(x, y, -0.17, -0.08, 0.08, 0.13) + _gauss2(x, y, 0.18, -0.12, 0.08, 0.13)
    near_hila = np.exp(-np.hypot(x + 0.17, y + 0.08) / 0.25) + np.exp(-np.hypot(x - 0.18, y + 0.12) / 0.25)
    vessels = _ridges(rng, 16, frame, 6.0) * np.clip(near_hila + 0.15, 0.0, 1.0)
    density += (0.1 * hila + 0.08 * vessels) * lung_soft

    # Bones: spine, posterior and anterior ribs, clavicles.
    spine_x, spine_period = rng.uniform(-0.015, 0.015), rng.uniform(0.12, 0.15)
    spine_offset = rng.uniform(0.0, 0.15)
    density += 0.16 * _spine(x, y, spine_x, spine_period, spine_offset)
    rib_first, rib_span, rib_curve = rng.uniform(-0.9, -0.82), rng.uniform(1.25, 1.45), rng.uniform(0.75, 1.0)
    ant_first, ant_span = rng.uniform(-0.62, -0.52), rng.uniform(1.0, 1.2)
    sternal_y, clav_rise = rng.uniform(-0.66, -0.56), rng.uniform(0.12, 0.28)
    rib_strength = rng.uniform(0.07, 0.11)
    cage = _smoothstep(0.0, 0.06, half_w - np.abs(x) - 0.04) * _smoothstep(0.75, 0.45, y)
    for lung in lungs:
        u = lung.side * x
        ribs = _posterior_ribs(u, y, rib_first, rib_span, rib_curve) + 0.4 * _anterior_ribs(
            u, y, ant_first, ant_span
        )
        density += rib_strength * ribs * _smoothstep(0.03, 0.1, u) * cage
        density += 0.18 * _clavicle(u, y, sternal_y, clav_rise) * body

    # Abdomen below the domes, with the gastric bubble under the left dome.
    left = lungs[1]
    bubble_y = float(_diaphragm_y(left, np.asarray(left.dome_u))) + 0.1
    bubble = _gauss2(x, y, left.dome_u - rng.uniform(0.0, 0.1), bubble_y, 0.1, 0.05)
    density -= rng.uniform(0.04, 0.12) * _smoothstep(0.3, 0.6, bubble) * body

    # Lesions: density fades with the lung edge like the lung itself; the mask is the lesion within the lungs.
    infection = np.zeros_like(x)
    if label == _COVID:
        infection = _covid_lesions(rng, lungs, frame)
        density += rng.uniform(0.2, 0.28) * infection * lung_soft
    elif label == _NON_COVID:
        solid, effusion = _non_covid_lesions(rng, lungs, frame)
        density += (rng.uniform(0.32, 0.42) * solid + rng.uniform(0.25, 0.35) * effusion) * lung_soft
        infection = np.maximum(solid, effusion)
    infection_mask = (infection > 0.02) & lung_mask

    # Acquisition: attenuation with a heel effect, exposure window, gamma, blur, mottle and film grain.
    heel = 1.0 + rng.uniform(-0.06, 0.06) * y + rng.uniform(-0.04, 0.04) * x
    value = 1.0 - np.exp(-rng.uniform(1.3, 1.6) * np.clip(density, 0.0, None) * heel)
    lo, hi = rng.uniform(0.04, 0.12), rng.uniform(0.75, 0.88)
    value = np.clip((value - lo) / (hi - lo), 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    value = frame.blur(value, rng.uniform(0.003, 0.007))
    value += 0.02 * _noise(rng, 28, frame)
    grain = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 0.6)
    value += rng.uniform(0.02, 0.05) * min(1.0, (size / 256) ** 0.5) * grain * (0.4 + value)
    image = np.clip(np.round(value * 255.0), 0, 255).astype(np.uint8)
    return Phantom(image=image, lung_mask=lung_mask, infection_mask=infection_mask)


# --------------------------------------------------------------------------------------------- files


def image_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    """The generator of one phantom, from (config seed, split, label, index within split and label)."""
    if split not in SPLITS:
        raise ValueError(f"image_rng: split={split!r} must be one of {SPLITS}")
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), label, index]))


def phantom_entries(cfg: PhantomConfig) -> Iterator[PhantomEntry]:
    """Every phantom of ``cfg`` in writing order; names number each class through Train, Val then Test."""
    counts = {"Train": cfg.num_train, "Val": cfg.num_val, "Test": cfg.num_test}
    for label, slug in enumerate(CLASS_SLUGS):
        number = 0
        for split in SPLITS:
            for index in range(counts[split]):
                yield PhantomEntry(split, label, index, f"phantom_{slug}_{number:06d}.png")
                number += 1


def _png_bytes(array: np.ndarray) -> bytes:
    """8-bit grayscale PNG of a (H, W) uint8 array, no metadata, fixed options: equal arrays, equal bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _manifest(cfg: PhantomConfig) -> dict[str, object]:
    config = to_jsonable(cfg)
    config.pop("root")  # the manifest lives in root: a moved folder stays valid
    return {"phantom_version": PHANTOM_VERSION, "config": config}


def _manifest_matches(path: Path, expected: dict[str, object]) -> bool:
    """True when ``path`` exists and holds exactly ``expected`` (unreadable or corrupt: False, rewrite)."""
    try:
        return json.loads(path.read_text()) == expected
    except (OSError, ValueError):
        return False


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _remove_stale(root: Path, keep: set[Path]) -> None:
    """Delete ``phantom_*.png`` files of an earlier config (only those: never anything a user put there)."""
    for subset in (LUNG_SUBSET, INFECTION_SUBSET):
        for path in (root / subset).glob("*/*/*/phantom_*.png"):
            if path not in keep:
                path.unlink()


def write_phantoms(cfg: PhantomConfig, progress: bool = True) -> Path:
    """Write the phantoms of ``cfg`` in the COVID-QU-Ex layout under ``cfg.root`` and return ``cfg.root``.

    Files (8-bit grayscale PNGs of ``cfg.img_size``; masks are 0/255 with the image's file name)::

        Lung Segmentation Data/Lung Segmentation Data/{Train,Val,Test}/{class}/{images,lung masks}/NAME.png
        Infection Segmentation Data/Infection Segmentation Data/{Train,Val,Test}/{class}/
            {images,lung masks,infection masks}/NAME.png
        phantoms.json   (config without root + PHANTOM_VERSION, written last and atomically)

    Returns at once when ``phantoms.json`` already matches; otherwise rewrites everything and deletes phantoms
    of an earlier config. The same config gives byte-identical files.
    """
    root = Path(cfg.root)
    manifest_path = root / MANIFEST_NAME
    expected = _manifest(cfg)
    if _manifest_matches(manifest_path, expected):
        return root
    root.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # a crash from here on means a rewrite next time
    entries = list(phantom_entries(cfg))
    written: set[Path] = set()
    made_dirs: set[Path] = set()
    for entry in tqdm(entries, desc=f"phantoms -> {root}", disable=not progress, unit="img"):
        rng = image_rng(cfg.seed, entry.split, entry.label, entry.index)
        phantom = render_phantom(rng, entry.label, cfg.img_size)
        files = {
            IMAGES_DIR: _png_bytes(phantom.image),
            LUNG_MASKS_DIR: _png_bytes(phantom.lung_mask.astype(np.uint8) * 255),
            INFECTION_MASKS_DIR: _png_bytes(phantom.infection_mask.astype(np.uint8) * 255),
        }
        class_name = CLASS_NAMES[entry.label]
        for subset, kinds in (
            (LUNG_SUBSET, (IMAGES_DIR, LUNG_MASKS_DIR)),
            (INFECTION_SUBSET, (IMAGES_DIR, LUNG_MASKS_DIR, INFECTION_MASKS_DIR)),
        ):
            for kind in kinds:
                path = root / subset / entry.split / class_name / kind / entry.name
                if path.parent not in made_dirs:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made_dirs.add(path.parent)
                path.write_bytes(files[kind])
                written.add(path)
    _remove_stale(root, written)
    _write_atomic(manifest_path, (json.dumps(expected, indent=2, sort_keys=True) + "\n").encode())
    return root
