"""The geometry of a phantom chest radiograph, composed by :func:`medsg_lib.data.phantom_render.render_phantom`.

Everything is drawn analytically in normalised patient coordinates (``x`` from image left to image right, ``y``
from top to bottom, both in ``[-1, 1]``) on the pixel grid of a :class:`Frame`: smooth random fields, the
lungs, heart, body outline, ribs, clavicles and spine, and the lesions of each class. The view is
postero-anterior: the patient's right lung (``side=-1``) is on the image left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 below ``edge0``, 1 above ``edge1`` (or the reverse when ``edge0 > edge1``), smooth in between."""
    t = np.clip((x - edge0) * (1.0 / (edge1 - edge0)), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def cylinder(d: np.ndarray, half_width: float) -> np.ndarray:
    """Projected thickness of a cylinder (a bone seen side-on) at distance ``d`` from its axis, in [0, 1]."""
    return np.sqrt(np.clip(1.0 - (d * (1.0 / half_width)) ** 2, 0.0, 1.0))


def gauss2(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Elliptic Gaussian bump with peak 1 at (cx, cy)."""
    return np.exp(-(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2))


@dataclass(frozen=True, eq=False)
class Frame:
    """Pixel grid of one image and its patient coordinates after a slight rotation, scaling and shift."""

    size: int
    matrix: np.ndarray  # (2, 3): (y, x) = matrix @ (row, col, 1)
    x: np.ndarray  # (size, size) patient x, image left -> right
    y: np.ndarray  # (size, size) patient y, top -> bottom

    def blur(self, a: np.ndarray, sigma: float) -> np.ndarray:
        """Gaussian blur with ``sigma`` in patient units (1 unit = half the image width)."""
        return ndimage.gaussian_filter(a, sigma * self.size / 2.0, mode="nearest", truncate=3.0)


def draw_frame(rng: np.random.Generator, size: int) -> Frame:
    """The ``size`` px grid of one image, the patient slightly rotated (+-4 deg), scaled and shifted."""
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
    return Frame(size=size, matrix=matrix, x=x.astype(np.float32), y=y.astype(np.float32))


_NOISE_EXTENT = 1.3  # random fields cover [-1.3, 1.3]^2 in patient units
_NOISE_UPSAMPLE = 3


def smooth_noise(rng: np.random.Generator, cells: int, frame: Frame) -> np.ndarray:
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


def ridges(rng: np.random.Generator, cells: int, frame: Frame, sharpness: float) -> np.ndarray:
    """Thin branching lines (vessels, bronchi) where a smooth field crosses zero, in [0, 1]."""
    return np.exp(-((smooth_noise(rng, cells, frame) * sharpness) ** 2))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 4-connected region of ``mask`` (drops slivers left between the heart and a dome)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


# --------------------------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class Lung:
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


def draw_lung(rng: np.random.Generator, side: int, body_w: float, dome_y: float) -> Lung:
    return Lung(
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


def diaphragm_y(lung: Lung, u: np.ndarray) -> np.ndarray:
    """y of the diaphragm under the lung at side coordinate ``u``: a dome, lowest at the lateral sulcus."""
    lat = np.clip((u - lung.dome_u) / (lung.lateral_u - lung.dome_u), 0.0, 1.5)
    med = np.clip((lung.dome_u - u) / (lung.dome_u - lung.medial_u), 0.0, 1.5)
    return lung.dome_y + lung.sulcus_depth * lat**2 + lung.medial_depth * med**2


def lung_shape(lung: Lung, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean lung field: rounded apex, convex lateral border, straight medial border, dome below."""
    u = lung.side * x
    t_lat = np.clip((y - lung.apex_y) / 0.6, 0.0, 1.0)
    t_med = np.clip((y - lung.apex_y) / 0.3, 0.0, 1.0)
    u_lat = lung.apex_u + (lung.lateral_u - lung.apex_u) * np.sqrt(t_lat) * (1.0 - 0.3 * (1.0 - t_lat) ** 2)
    u_lat = u_lat + lung.wobble * np.sin(7.0 * y + lung.phase)
    u_med = lung.apex_u - (lung.apex_u - lung.medial_u) * np.sqrt(t_med)
    return (y > lung.apex_y) & (u < u_lat) & (u > u_med) & (y < diaphragm_y(lung, u))


@dataclass(frozen=True)
class Heart:
    """The cardiac outline: an ellipse centred at ``(cx, cy)`` with half-axes ``rx``, ``ry``, tilted."""

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


def body_halfwidth(y: np.ndarray, neck_w: float, body_w: float, shoulder_y: float) -> np.ndarray:
    """Half-width of the body outline: the neck widening along sloping shoulders into the thorax."""
    shoulders = smoothstep(shoulder_y - 0.35, shoulder_y + 0.1, y) ** 0.7
    return neck_w + (body_w - neck_w) * shoulders - 0.05 * np.clip(y - 0.3, 0.0, None)


def posterior_ribs(u: np.ndarray, y: np.ndarray, first_y: float, span: float, curve: float) -> np.ndarray:
    """Ten posterior ribs: arcs leaving the spine, rising slightly, then bending down along the chest wall."""
    s = y - (first_y - 0.3 * u + curve * u * u)
    k = 10.0 * np.clip(s / span, 0.0, None) ** 0.85  # continuous rib index; spacing grows downwards
    d = np.abs(k - np.round(k))
    valid = (k < 9.5) & (s > -0.04)
    return (0.8 * cylinder(d, 0.2) + 0.3 * np.exp(-(((d - 0.17) / 0.04) ** 2))) * valid  # cortical edges


def anterior_ribs(u: np.ndarray, y: np.ndarray, first_y: float, span: float) -> np.ndarray:
    """Six anterior ribs: fainter bands running down and inwards from the lateral chest wall."""
    w = 0.85 - u
    s = y - (first_y + 0.5 * w - 0.3 * w * w)
    k = 6.0 * np.clip(s / span, 0.0, None)
    d = np.abs(k - np.round(k))
    return cylinder(d, 0.22) * ((k < 5.5) & (s > -0.04)) * smoothstep(0.25, 0.5, u)


def clavicle(u: np.ndarray, y: np.ndarray, sternal_y: float, rise: float) -> np.ndarray:
    """One clavicle: an S-shaped bone from the sternal notch up and out to the shoulder."""
    axis = sternal_y - rise * u + 0.04 * np.sin(np.pi * u / 0.65)
    on = smoothstep(0.04, 0.09, u) * smoothstep(0.85, 0.7, u)
    return cylinder(np.abs(y - axis), 0.035 + 0.015 * u) * on


def spine(x: np.ndarray, y: np.ndarray, center_x: float, period: float, offset: float) -> np.ndarray:
    """Vertebral column: a bright band of vertebral bodies with darker discs and pedicle spots."""
    phase = (y - offset) / period
    frac = phase - np.floor(phase)
    vertebra = 1.0 - 0.4 * (2.0 * frac - 1.0) ** 4  # darker discs between the bodies
    dx = np.abs(x - center_x)
    pedicles = np.clip(1.0 - ((dx - 0.05) / 0.014) ** 2 - ((frac - 0.35) / 0.12) ** 2, 0.0, None)
    return cylinder(dx, 0.075) * vertebra + 0.4 * pedicles


# --------------------------------------------------------------------------------------------- lesions


def covid_lesions(rng: np.random.Generator, lungs: list[Lung], frame: Frame) -> np.ndarray:
    """Ground-glass opacity in [0, 1]: hazy patches in the peripheral lower zones of (usually) both lungs.

    The caller confines the field to the lungs.
    """
    x, y = frame.x, frame.y
    texture = smooth_noise(rng, 22, frame)
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
            field += weight * gauss2(lung.side * x, y, bu, by, ru, rv)
    patchy = field * (0.8 + 0.35 * texture)
    return np.clip((patchy - 0.3) / 0.6, 0.0, 1.0)


def non_covid_lesions(
    rng: np.random.Generator, lungs: list[Lung], frame: Frame
) -> tuple[np.ndarray, np.ndarray]:
    """Consolidation and effusion, each in [0, 1], mostly on one side (the caller confines them to lungs)."""
    x, y = frame.x, frame.y
    texture = smooth_noise(rng, 12, frame)
    bronchi = ridges(rng, 10, frame, 7.0)
    pick = int(rng.integers(0, 2))
    lung = lungs[pick]
    u = lung.side * x
    this_side = u > 0.0
    lobe = int(rng.integers(0, 3))
    if lobe == 0:  # lower lobe: below an oblique fissure (sharp upper edge), denser downwards
        fissure = rng.uniform(-0.15, 0.1) + 0.4 * (u - lung.medial_u)
        region = smoothstep(-0.03, 0.03, y - fissure) * (0.8 + 0.4 * smoothstep(0.0, 0.4, y - fissure))
    elif lobe == 1:  # upper lobe: above a horizontal fissure
        fissure = rng.uniform(-0.2, 0.0) + 0.08 * u
        region = smoothstep(-0.03, 0.03, fissure - y) * (0.8 + 0.3 * smoothstep(0.0, 0.3, fissure - y))
    else:  # round (segmental) pneumonia with fuzzy margins
        cu, cy = rng.uniform(0.3, 0.5), rng.uniform(-0.25, lung.dome_y - 0.15)
        region = 1.3 * gauss2(u, y, cu, cy, rng.uniform(0.16, 0.24), rng.uniform(0.18, 0.28))
    solid = np.clip((region * (0.85 + 0.35 * texture) - 0.3) / 0.7, 0.0, 1.0)
    solid = solid * (1.0 - 0.3 * bronchi) * this_side  # air bronchograms: darker branching lines
    if rng.random() < 0.2:  # a smaller, fainter focus in the other lung
        other = lungs[1 - pick]
        cu, cy = rng.uniform(0.35, 0.55), rng.uniform(0.0, other.dome_y - 0.05)
        blob = gauss2(other.side * x, y, cu, cy, rng.uniform(0.1, 0.15), rng.uniform(0.1, 0.16))
        solid = solid + 0.6 * np.clip((blob * (0.85 + 0.35 * texture) - 0.3) / 0.7, 0.0, 1.0) * ~this_side
    effusion = np.zeros_like(x)
    if rng.random() < 0.4:  # pleural effusion: fluid in the costophrenic angle, meniscus rising laterally
        level = lung.dome_y + rng.uniform(0.0, 0.1)
        rise = rng.uniform(0.15, 0.35)
        t = np.clip((u - lung.dome_u + 0.1) / (lung.lateral_u - lung.dome_u + 0.1), 0.0, 1.0)
        effusion = smoothstep(-0.03, 0.12, y - (level - rise * t**1.5)) * this_side
    return np.clip(solid, 0.0, 1.0), effusion
