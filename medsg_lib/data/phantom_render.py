"""Rendering one phantom chest radiograph: anatomy, the lesions of its class and the acquisition.

:func:`render_phantom` composes the shapes of :mod:`medsg_lib.data.phantom_anatomy` into a density, then
simulates the film (attenuation with a heel effect, exposure window, gamma, blur, mottle and grain). The
image and both masks come from the same geometry, so they match pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medsg_lib.config import CLASS_NAMES
from medsg_lib.data.phantom_anatomy import (
    Heart,
    Lung,
    anterior_ribs,
    body_halfwidth,
    clavicle,
    covid_lesions,
    cylinder,
    diaphragm_y,
    draw_frame,
    draw_lung,
    gauss2,
    largest_component,
    lung_shape,
    non_covid_lesions,
    posterior_ribs,
    ridges,
    smooth_noise,
    smoothstep,
    spine,
)

_COVID, _NON_COVID, _NORMAL = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Phantom:
    """One synthetic radiograph and its exact masks (all ``(size, size)``, PA view)."""

    image: np.ndarray  # (size, size) uint8 in [0, 255], bright = dense
    lung_mask: np.ndarray  # (size, size) bool, the rendered lung fields
    infection_mask: np.ndarray  # (size, size) bool, lesions inside the lungs; all False for Normal


def render_phantom(rng: np.random.Generator, label: int, size: int, lesions: bool = True) -> Phantom:
    """Render one synthetic postero-anterior chest radiograph of class ``label`` (index into CLASS_NAMES).

    The random draws do not depend on ``size`` (only the film grain does), so one generator state gives the
    same patient at any resolution. Returns a :class:`Phantom`: ``(size, size)`` uint8 image, bool masks.

    ``lesions=False`` renders the lesion-free twin: the same draws (the lesions are drawn, then left out), so
    the same patient and acquisition with clear lungs and an empty infection mask. Every draw outside the
    lesions ignores ``label``, so the twins of the three classes come from one distribution: no classifier can
    tell them apart (the phantom control of ``tests/test_phantom_control.py``).
    """
    if label not in (_COVID, _NON_COVID, _NORMAL):
        raise ValueError(f"render_phantom: label={label!r} must be 0, 1 or 2 (an index into {CLASS_NAMES})")
    if size < 16:
        raise ValueError(f"render_phantom: size={size!r} must be >= 16 pixels")
    frame = draw_frame(rng, size)
    x, y = frame.x, frame.y

    # Body outline and soft tissue thickness (projected thickness of an elliptic cylinder).
    body_w = rng.uniform(0.84, 0.94)
    half_w = body_halfwidth(y, rng.uniform(0.2, 0.27), body_w, rng.uniform(-0.6, -0.45))
    tissue = np.sqrt(np.clip(1.0 - (x / half_w) ** 2, 0.0, 1.0))
    body = smoothstep(0.0, 0.04, half_w - np.abs(x))
    density = 0.25 * body + 0.5 * tissue

    # Lungs: the heart and the aortic knob cut into the patient's left lung (image right).
    right_dome = rng.uniform(0.18, 0.32)
    left_dome = right_dome + rng.uniform(0.03, 0.1)  # the right dome is higher
    heart = Heart(
        cx=rng.uniform(0.1, 0.16),
        cy=rng.uniform(0.12, 0.22),
        rx=rng.uniform(0.33, 0.4),
        ry=rng.uniform(0.19, 0.25),
        tilt=rng.uniform(0.3, 0.6),
    )
    heart_r = heart.radius(x, y)
    knob_y = rng.uniform(-0.42, -0.32)
    knob = gauss2(x, y, rng.uniform(0.1, 0.14), knob_y, 0.09, 0.07)
    lungs: list[Lung] = []
    lung_mask = np.zeros((size, size), dtype=bool)
    for side, dome in ((-1, right_dome), (1, left_dome)):
        lung = draw_lung(rng, side, body_w, dome)
        mask = lung_shape(lung, x, y) & (heart_r > 1.0)
        if side > 0:
            mask &= knob < 0.5
        lungs.append(lung)
        lung_mask |= largest_component(mask)
    lung_f = lung_mask.astype(np.float32)
    lung_soft = frame.blur(lung_f, 0.018)
    lung_deep = frame.blur(lung_f, 0.1)
    density -= (0.35 * lung_soft + 0.3 * lung_deep) * tissue

    # Mediastinum, trachea, heart, aortic knob, hila and vessel markings.
    mediastinum_w = 0.16 + 0.08 * smoothstep(-0.4, 0.2, y)  # widens down to the heart
    density += 0.12 * np.exp(-((x / mediastinum_w) ** 2)) * smoothstep(-0.9, -0.5, y)
    trachea = cylinder(np.abs(x - 0.01 * (y + 1.0)), 0.045) * smoothstep(-0.2, -0.35, y)
    density -= 0.12 * trachea
    density += 0.08 * smoothstep(1.08, 0.92, heart_r) * smoothstep(heart.cy - heart.ry, heart.cy, y)
    density += 0.08 * knob
    hila = gauss2(x, y, -0.17, -0.08, 0.08, 0.13) + gauss2(x, y, 0.18, -0.12, 0.08, 0.13)
    near_hila = np.exp(-np.hypot(x + 0.17, y + 0.08) / 0.25) + np.exp(-np.hypot(x - 0.18, y + 0.12) / 0.25)
    vessels = ridges(rng, 16, frame, 6.0) * np.clip(near_hila + 0.15, 0.0, 1.0)
    density += (0.1 * hila + 0.08 * vessels) * lung_soft

    # Bones: spine, posterior and anterior ribs, clavicles.
    spine_x, spine_period = rng.uniform(-0.015, 0.015), rng.uniform(0.12, 0.15)
    spine_offset = rng.uniform(0.0, 0.15)
    density += 0.16 * spine(x, y, spine_x, spine_period, spine_offset)
    rib_first, rib_span, rib_curve = rng.uniform(-0.9, -0.82), rng.uniform(1.25, 1.45), rng.uniform(0.75, 1.0)
    ant_first, ant_span = rng.uniform(-0.62, -0.52), rng.uniform(1.0, 1.2)
    sternal_y, clav_rise = rng.uniform(-0.66, -0.56), rng.uniform(0.12, 0.28)
    rib_strength = rng.uniform(0.07, 0.11)
    cage = smoothstep(0.0, 0.06, half_w - np.abs(x) - 0.04) * smoothstep(0.75, 0.45, y)
    for lung in lungs:
        u = lung.side * x
        ribs = posterior_ribs(u, y, rib_first, rib_span, rib_curve) + 0.4 * anterior_ribs(
            u, y, ant_first, ant_span
        )
        density += rib_strength * ribs * smoothstep(0.03, 0.1, u) * cage
        density += 0.18 * clavicle(u, y, sternal_y, clav_rise) * body

    # Abdomen below the domes, with the gastric bubble under the left dome.
    left = lungs[1]
    bubble_y = float(diaphragm_y(left, np.asarray(left.dome_u))) + 0.1
    bubble = gauss2(x, y, left.dome_u - rng.uniform(0.0, 0.1), bubble_y, 0.1, 0.05)
    density -= rng.uniform(0.04, 0.12) * smoothstep(0.3, 0.6, bubble) * body

    # Lesions: density fades with the lung edge like the lung itself; the mask is the lesion within the lungs.
    infection, lesion_density = np.zeros_like(x), np.zeros_like(x)
    if label == _COVID:
        infection = covid_lesions(rng, lungs, frame)
        lesion_density = rng.uniform(0.2, 0.28) * infection * lung_soft
    elif label == _NON_COVID:
        solid, effusion = non_covid_lesions(rng, lungs, frame)
        lesion_density = (rng.uniform(0.32, 0.42) * solid + rng.uniform(0.25, 0.35) * effusion) * lung_soft
        infection = np.maximum(solid, effusion)
    if lesions:
        density += lesion_density
    infection_mask = (infection > 0.02) & lung_mask & lesions

    # Acquisition: attenuation with a heel effect, exposure window, gamma, blur, mottle and film grain.
    heel = 1.0 + rng.uniform(-0.06, 0.06) * y + rng.uniform(-0.04, 0.04) * x
    value = 1.0 - np.exp(-rng.uniform(1.3, 1.6) * np.clip(density, 0.0, None) * heel)
    lo, hi = rng.uniform(0.04, 0.12), rng.uniform(0.75, 0.88)
    value = np.clip((value - lo) / (hi - lo), 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    value = frame.blur(value, rng.uniform(0.003, 0.007))
    value += 0.02 * smooth_noise(rng, 28, frame)
    grain = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 0.6)
    value += rng.uniform(0.02, 0.05) * min(1.0, (size / 256) ** 0.5) * grain * (0.4 + value)
    image = np.clip(np.round(value * 255.0), 0, 255).astype(np.uint8)
    return Phantom(image=image, lung_mask=lung_mask, infection_mask=infection_mask)
