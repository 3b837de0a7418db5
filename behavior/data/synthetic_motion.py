"""Motion of the synthetic set's classes: per-frame joint angles of the stick figure for each class.

Every class draws its parameters (speed, amplitude, phase, view) from its own ranges; ``behavior.data.synthetic``
renders them. The order-only pairs draw everything alike and play one motion backwards for the other class.
"""

from __future__ import annotations

import numpy as np

from behavior.data import synthetic_render as R

SYNTHETIC_CLASSES: tuple[str, ...] = ("walk", "run", "jump", "wave_one", "wave_both", "bend")  # the default set
# Pairs that differ only in temporal order (opt-in: SyntheticSpec(classes=...), data.synthetic.classes).
CIRCLE_CLASSES: tuple[str, ...] = ("circle_cw", "circle_ccw")  # a mirror image swaps these two
SQUAT_CLASSES: tuple[str, ...] = ("squat_down", "stand_up")
ORDER_CLASSES: tuple[str, ...] = CIRCLE_CLASSES + SQUAT_CLASSES
KNOWN_CLASSES: tuple[str, ...] = SYNTHETIC_CLASSES + ORDER_CLASSES  # order fixes each class's random stream


def _deg(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.deg2rad(rng.uniform(lo, hi)))


def _standing_legs(rng, pose: dict, t: np.ndarray) -> None:
    for name, s in R.SIDES.items():
        pose[f"thigh_{name}"] = s * _deg(rng, 0, 6) + 0.02 * np.sin(2.0 * t + s)
        pose[f"shank_{name}"] = pose[f"thigh_{name}"] - _deg(rng, 0, 6)
        pose[f"thigh_{name}_abd"] = pose[f"shank_{name}_abd"] = _deg(rng, 2, 9)


def _wave_arm(rng, pose: dict, name: str, p: np.ndarray) -> None:
    """Elbow above the shoulder, forearm sweeping side to side over the head (in the frontal plane)."""
    base = _deg(rng, 100, 145)
    pose[f"upper_{name}_abd"] = base + np.deg2rad(8) * np.sin(p)
    pose[f"fore_{name}_abd"] = base + _deg(rng, 25, 45) + _deg(rng, 30, 48) * np.sin(p + 0.5)
    pose[f"upper_{name}"] = pose[f"fore_{name}"] = _deg(rng, -15, 15)


def _hanging_arm(rng, pose: dict, name: str, t: np.ndarray) -> None:
    pose[f"upper_{name}_abd"] = _deg(rng, 5, 14) + 0.04 * np.sin(1.5 * t)
    pose[f"fore_{name}_abd"] = pose[f"upper_{name}_abd"] + _deg(rng, 0, 8)
    pose[f"upper_{name}"] = _deg(rng, -8, 8) + 0.05 * np.sin(1.3 * t + rng.uniform(0, 6))
    pose[f"fore_{name}"] = pose[f"upper_{name}"] + _deg(rng, 5, 20)


def _circling_arm(pose: dict, name: str, centre: tuple[float, float], radius: float, theta: np.ndarray) -> None:
    """The hand of arm ``name`` on a circle in the frontal plane: ``centre`` (distance, angle from straight down,
    outward positive) from the shoulder, at angle ``theta`` (0 = outward, pi/2 = down); the elbow solves the rest."""
    out = centre[0] * np.sin(centre[1]) + radius * np.cos(theta)  # outward from the shoulder
    down = centre[0] * np.cos(centre[1]) + radius * np.sin(theta)
    reach = np.hypot(out, down)
    bend = np.arccos(np.clip((R.L_UPPER**2 + reach**2 - R.L_FORE**2) / (2 * R.L_UPPER * reach), -1.0, 1.0))
    upper = np.arctan2(out, down) + bend  # the elbow above the shoulder-hand line
    elbow_out, elbow_down = R.L_UPPER * np.sin(upper), R.L_UPPER * np.cos(upper)
    pose[f"upper_{name}_abd"] = upper
    pose[f"fore_{name}_abd"] = np.arctan2(out - elbow_out, down - elbow_down)
    pose[f"upper_{name}"] = pose[f"fore_{name}"] = 0.0


def motion(label: str, rng: np.random.Generator, t: np.ndarray) -> tuple[dict, float, float]:
    """Per-frame joint angles for ``label``; returns (pose, translation speed in body heights/s, yaw)."""
    phase = rng.uniform(0, 2 * np.pi)
    pose: dict[str, np.ndarray | float] = {}
    speed = 0.0
    if label in ("walk", "run"):
        run = label == "run"
        # Non-overlapping cadence and speed ranges, plus lean and bent arms, separate run from walk.
        freq = rng.uniform(1.35, 1.75) if run else rng.uniform(0.8, 1.05)
        speed = rng.uniform(0.8, 1.1) if run else rng.uniform(0.28, 0.45)
        amp, bias = (_deg(rng, 32, 42), _deg(rng, 8, 15)) if run else (_deg(rng, 18, 26), 0.0)
        knee_amp, knee0 = (_deg(rng, 60, 95), _deg(rng, 15, 25)) if run else (_deg(rng, 25, 40), _deg(rng, 2, 6))
        arm_amp = _deg(rng, 30, 45) if run else _deg(rng, 15, 28)
        elbow = _deg(rng, 75, 100) if run else _deg(rng, 8, 25)
        pose["lean"] = _deg(rng, 10, 18) if run else _deg(rng, -2, 5)
        for name, s in R.SIDES.items():
            p = 2 * np.pi * freq * t + phase + (np.pi if s > 0 else 0.0)
            pose[f"thigh_{name}"] = bias + amp * np.sin(p)
            # The knee folds while the leg swings forward (thigh velocity > 0), stays nearly straight in stance.
            pose[f"shank_{name}"] = pose[f"thigh_{name}"] - knee0 - knee_amp * np.maximum(np.cos(p), 0) ** 0.8
            pose[f"thigh_{name}_abd"] = pose[f"shank_{name}_abd"] = 0.03
            pose[f"upper_{name}"] = -arm_amp * np.sin(p) + (_deg(rng, 0, 10) if run else 0.0)
            pose[f"fore_{name}"] = pose[f"upper_{name}"] + elbow
            pose[f"upper_{name}_abd"] = pose[f"fore_{name}_abd"] = _deg(rng, 4, 12)
        if run:  # flight phase twice per stride
            pose["lift"] = rng.uniform(0.03, 0.06) * np.maximum(np.sin(4 * np.pi * freq * t + phase), 0)
        yaw = _deg(rng, -35, 35)
    elif label == "jump":
        freq, air_frac = rng.uniform(1.1, 1.6), rng.uniform(0.45, 0.6)
        u = (freq * t + phase / (2 * np.pi)) % 1.0
        air = np.where(u < air_frac, np.sin(np.pi * u / air_frac), 0.0)
        crouch = np.where(u >= air_frac, np.sin(np.pi * (u - air_frac) / (1 - air_frac)), 0.0)
        knee = np.deg2rad(4) + _deg(rng, 50, 75) * crouch + _deg(rng, 40, 80) * air  # legs tuck in the air
        raise_fwd, raise_side = _deg(rng, 40, 150), _deg(rng, 20, 110)
        pose["lean"] = _deg(rng, 15, 30) * crouch + np.deg2rad(4) * air
        pose["lift"] = rng.uniform(0.2, 0.32) * air
        for name in R.SIDES:
            pose[f"thigh_{name}"] = 0.5 * knee + np.deg2rad(15) * air
            pose[f"shank_{name}"] = pose[f"thigh_{name}"] - knee
            pose[f"thigh_{name}_abd"] = pose[f"shank_{name}_abd"] = 0.05
            pose[f"upper_{name}"] = -np.deg2rad(35) * crouch + raise_fwd * air
            pose[f"fore_{name}"] = pose[f"upper_{name}"] + np.deg2rad(15)
            pose[f"upper_{name}_abd"] = pose[f"fore_{name}_abd"] = 0.1 + raise_side * air
        yaw = _deg(rng, -50, 50)
    elif label == "bend":
        freq, depth = rng.uniform(0.7, 1.05), _deg(rng, 65, 100)
        b = (1 - np.cos(2 * np.pi * freq * t + phase)) / 2
        knee = _deg(rng, 0, 25) * b
        pose["lean"] = depth * b
        pose["hip_x"] = -0.1 * b * depth / (np.pi / 2)  # hips move back to balance the torso
        reach = rng.uniform(0.1, 0.5)
        for name in R.SIDES:
            pose[f"thigh_{name}"] = np.deg2rad(12) * b + 0.5 * knee
            pose[f"shank_{name}"] = np.deg2rad(12) * b - 0.5 * knee
            pose[f"thigh_{name}_abd"] = pose[f"shank_{name}_abd"] = 0.04
            pose[f"upper_{name}"] = reach * pose["lean"] + 0.05 * np.sin(3 * t)
            pose[f"fore_{name}"] = pose[f"upper_{name}"] + _deg(rng, 5, 20)
            pose[f"upper_{name}_abd"] = pose[f"fore_{name}_abd"] = _deg(rng, 3, 10)
        yaw = _deg(rng, -35, 35)
    elif label in ("wave_one", "wave_both"):
        freq = rng.uniform(1.6, 2.8)
        p = 2 * np.pi * freq * t + phase
        _standing_legs(rng, pose, t)
        pose["lean"] = _deg(rng, -3, 4) + 0.03 * np.sin(0.7 * p)
        waving = list(R.SIDES) if label == "wave_both" else [str(rng.choice(list(R.SIDES)))]
        mirror = rng.random() < 0.6  # both arms mirror each other, or sweep the same way
        for name in R.SIDES:
            if name in waving:
                offset = np.pi if (name == "r" and not mirror) else 0.0
                _wave_arm(rng, pose, name, p + offset + rng.uniform(-0.3, 0.3))
            else:
                _hanging_arm(rng, pose, name, t)
        yaw = np.pi / 2 + _deg(rng, -30, 30)
    elif label in CIRCLE_CLASSES:
        # Every draw is the same for both classes; circle_ccw plays the arm's path of circle_cw backwards (its
        # start shifted to where cw ends), so only the order of the frames tells them apart. Clockwise on screen
        # is an increasing angle for the right arm (render_clip keeps circle clips unmirrored).
        _standing_legs(rng, pose, t)
        pose["lean"] = _deg(rng, -3, 4)
        name = str(rng.choice(list(R.SIDES)))
        sweep = 2 * np.pi * rng.uniform(0.5, 1.0) * t  # turns/s: under half a turn between any two sampled frames
        if label == "circle_ccw":
            sweep = sweep[-1] - sweep
        centre = (rng.uniform(0.09, 0.12), _deg(rng, 75, 110))  # beside the shoulder; the hand stays within reach
        _circling_arm(pose, name, centre, rng.uniform(0.17, 0.2), phase + R.SIDES[name] * sweep)
        _hanging_arm(rng, pose, "l" if name == "r" else "r", t)
        yaw = np.pi / 2 + _deg(rng, -30, 30)
    elif label in SQUAT_CLASSES:
        # One smooth squat over part of the clip, arms reaching forward; stand_up is squat_down played backwards
        # (the same draws), so again only the order of the frames tells the two apart.
        u = t / max(t[-1], 1e-6)
        start, length = rng.uniform(0.0, 0.3), rng.uniform(0.5, 0.7)
        s = np.clip((u - start) / length, 0.0, 1.0)
        if label == "stand_up":
            s = s[::-1]
        depth = _deg(rng, 60, 85) * s * s * (3 - 2 * s)  # thigh angle, smooth step
        pose["lean"] = rng.uniform(0.5, 0.7) * depth
        reach = rng.uniform(0.6, 1.1)
        for name in R.SIDES:
            pose[f"thigh_{name}"] = depth
            pose[f"shank_{name}"] = -0.8 * depth
            pose[f"thigh_{name}_abd"] = pose[f"shank_{name}_abd"] = _deg(rng, 2, 9)
            pose[f"upper_{name}"] = reach * depth
            pose[f"fore_{name}"] = pose[f"upper_{name}"] + _deg(rng, 5, 20)
            pose[f"upper_{name}_abd"] = pose[f"fore_{name}_abd"] = _deg(rng, 3, 10)
        yaw = _deg(rng, -35, 35)
    else:
        raise ValueError(f"unknown synthetic class {label!r}; choose one of {KNOWN_CLASSES}")
    return pose, speed, yaw
