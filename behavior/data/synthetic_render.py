"""Drawing side of the synthetic dataset: stick-figure skeleton, cluttered backgrounds, distractors.

Everything here is pure numpy/PIL and draws into float32 ``[H, W, 3]`` canvases in 0..255. Shapes are
rendered from signed distances with a one-pixel soft edge, so thin limbs stay visible (no aliasing
flicker between frames) after H.264 encoding and downscaling.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Skeleton proportions in units of the standing body height (feet to top of head ~ 1.0).
L_THIGH, L_SHANK, L_TORSO, L_NECK = 0.245, 0.245, 0.30, 0.035
L_UPPER, L_FORE, L_FOOT = 0.165, 0.165, 0.065
R_HEAD, HIP_W, SHOULDER_W = 0.075, 0.055, 0.095
SIDES = {"l": -1.0, "r": 1.0}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def limb_dir(pitch: np.ndarray, abd: np.ndarray, side: float) -> np.ndarray:
    """Unit vector of a limb hanging from its joint: ``pitch`` swings it forward (+x), ``abd`` sideways.

    Both zero points straight down; pitch or abduction of pi points straight up.
    """
    ca = np.cos(abd)
    return np.stack([np.sin(pitch) * ca, -np.cos(pitch) * ca, side * np.sin(abd)], axis=-1)


def forward_kinematics(pose: dict[str, np.ndarray], num_frames: int) -> dict[str, np.ndarray]:
    """Joint positions ``[T, 3]`` (x forward, y up, z to the body's right), lowest foot resting on y=0.

    ``pose`` holds per-frame angle arrays (radians): ``lean`` (torso pitch), ``hip_x`` (pelvis shift,
    body units), ``lift`` (airborne height) and ``<seg>_<side>`` pitch / ``<seg>_<side>_abd`` abduction
    for seg in thigh, shank, upper, fore. Missing entries are zero.
    """
    zero = np.zeros(num_frames)

    def get(key: str) -> np.ndarray:
        return np.broadcast_to(np.asarray(pose.get(key, zero), dtype=np.float64), (num_frames,))

    lean = get("lean")
    pelvis = np.stack([get("hip_x"), zero, zero], axis=-1)
    up = np.stack([np.sin(lean), np.cos(lean), zero], axis=-1)
    chest = pelvis + L_TORSO * up
    joints = {"pelvis": pelvis, "chest": chest, "head": chest + (L_NECK + R_HEAD) * up}
    for name, s in SIDES.items():
        lateral = np.array([0.0, 0.0, s])
        hip = pelvis + HIP_W * lateral
        knee = hip + L_THIGH * limb_dir(get(f"thigh_{name}"), get(f"thigh_{name}_abd"), s)
        shank_p = get(f"shank_{name}")
        foot = knee + L_SHANK * limb_dir(shank_p, get(f"shank_{name}_abd"), s)
        # The foot points forward, perpendicular to the shank, which tells the facing direction.
        toe = foot + L_FOOT * np.stack([np.cos(shank_p), np.sin(shank_p), zero], axis=-1)
        shoulder = chest + SHOULDER_W * lateral
        elbow = shoulder + L_UPPER * limb_dir(get(f"upper_{name}"), get(f"upper_{name}_abd"), s)
        hand = elbow + L_FORE * limb_dir(get(f"fore_{name}"), get(f"fore_{name}_abd"), s)
        joints.update({f"hip_{name}": hip, f"knee_{name}": knee, f"foot_{name}": foot, f"toe_{name}": toe,
                       f"shoulder_{name}": shoulder, f"elbow_{name}": elbow, f"hand_{name}": hand})
    ground = np.minimum(joints["foot_l"][:, 1], joints["foot_r"][:, 1])
    ground = np.minimum(ground, np.minimum(joints["toe_l"][:, 1], joints["toe_r"][:, 1]))
    shift = np.stack([zero, get("lift") - ground, zero], axis=-1)
    return {k: v + shift for k, v in joints.items()}


# (joint a, joint b, radius kind, colour kind); sides are expanded below.
_SEGMENTS = [("pelvis", "chest", "torso", "torso"), ("hip_l", "hip_r", "limb", "legs"),
             ("shoulder_l", "shoulder_r", "limb", "torso"), ("chest", "head", "limb", "torso"),
             ("head", "head", "head", "head")]
for _s in SIDES:
    _SEGMENTS += [(f"hip_{_s}", f"knee_{_s}", "limb", "legs"), (f"knee_{_s}", f"foot_{_s}", "limb", "legs"),
                  (f"foot_{_s}", f"toe_{_s}", "foot", "legs"),
                  (f"shoulder_{_s}", f"elbow_{_s}", "limb", "arms"), (f"elbow_{_s}", f"hand_{_s}", "limb", "arms")]


def project(joints: dict[str, np.ndarray], yaw: float, facing: float, size_px: float,
            origin: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Orthographic view after turning the body by ``yaw`` (0 = profile, pi/2 = frontal).

    ``origin`` is ``[T, 2]`` image position of the body's ground point; returns per-joint ``[T, 2]`` pixel
    coordinates and ``[T]`` depths (larger = further from the camera).
    """
    c, s = np.cos(yaw), np.sin(yaw)
    pix, depth = {}, {}
    for name, p in joints.items():
        x_rot = p[:, 0] * c + p[:, 2] * s
        pix[name] = np.stack([origin[:, 0] + facing * size_px * x_rot, origin[:, 1] - size_px * p[:, 1]], -1)
        depth[name] = -p[:, 0] * s + p[:, 2] * c
    return pix, depth


class Canvas:
    """Float frame plus cached pixel-centre grids for soft-edged signed-distance drawing."""

    def __init__(self, height: int, width: int):
        self.h, self.w = height, width
        self.ys, self.xs = np.mgrid[0:height, 0:width].astype(np.float32)
        self.img = np.zeros((height, width, 3), np.float32)

    def _window(self, x0: float, x1: float, y0: float, y1: float):
        c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, self.w)
        r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)) + 1, self.h)
        if c0 >= c1 or r0 >= r1:
            return None
        return (slice(r0, r1), slice(c0, c1))

    def _blend(self, win, dist: np.ndarray, colour, outline, outline_px: float, alpha: float = 1.0):
        fill = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
        region = self.img[win]
        if outline is None:
            region += (np.asarray(colour, np.float32) - region) * (fill * alpha)
            return
        cover = np.clip(outline_px + 0.5 - dist, 0.0, 1.0)[..., None]
        paint = np.asarray(outline, np.float32) + (np.asarray(colour, np.float32) - outline) * fill
        region += (paint - region) * (cover * alpha)

    def capsule(self, p0, p1, radius: float, colour, outline=None, outline_px: float = 1.0, alpha=1.0):
        """Thick line with round caps from ``p0`` to ``p1`` (a disc when they coincide)."""
        pad = radius + outline_px + 1.0
        win = self._window(min(p0[0], p1[0]) - pad, max(p0[0], p1[0]) + pad,
                           min(p0[1], p1[1]) - pad, max(p0[1], p1[1]) + pad)
        if win is None:
            return
        px, py = self.xs[win] - np.float32(p0[0]), self.ys[win] - np.float32(p0[1])
        dx, dy = float(p1[0] - p0[0]), float(p1[1] - p0[1])
        denom = dx * dx + dy * dy
        t = np.clip((px * dx + py * dy) / denom, 0.0, 1.0) if denom > 1e-9 else 0.0
        dist = np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2) - radius
        self._blend(win, dist, colour, outline, outline_px, alpha)

    def box(self, centre, half: tuple[float, float], angle: float, colour, outline=None, outline_px=1.0):
        """Filled rectangle rotated by ``angle`` around ``centre``."""
        pad = float(np.hypot(*half)) + outline_px + 1.0
        win = self._window(centre[0] - pad, centre[0] + pad, centre[1] - pad, centre[1] + pad)
        if win is None:
            return
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        px, py = self.xs[win] - np.float32(centre[0]), self.ys[win] - np.float32(centre[1])
        qx, qy = np.abs(c * px + s * py) - half[0], np.abs(-s * px + c * py) - half[1]
        dist = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
        self._blend(win, dist, colour, outline, outline_px)

    def draw_figure(self, pix: dict, depth: dict, frame: int, radii: dict, colours: dict,
                    outline, shade: float) -> None:
        """Paint the skeleton back to front; limbs on the far side of the torso are slightly darker."""
        items = []
        for a, b, rad_kind, col_kind in _SEGMENTS:
            d = 0.5 * (depth[a][frame] + depth[b][frame])
            if rad_kind == "head":
                d -= 1.0  # the head always stays on top of the neck and torso
            items.append((d, a, b, rad_kind, col_kind))
        items.sort(key=lambda it: -it[0])
        for d, a, b, rad_kind, col_kind in items:
            colour = colours[col_kind]
            if col_kind in ("arms", "legs") and d > 0.02:
                colour = colour * shade
            self.capsule(pix[a][frame], pix[b][frame], radii[rad_kind], colour, outline)


def random_colour(rng: np.random.Generator, luma: float | None = None, sat=(0.3, 1.0)) -> np.ndarray:
    """A random RGB colour in 0..255; with ``luma`` given it is rescaled toward that luminance."""
    hue = rng.uniform(0, 1)
    rgb = np.clip(np.abs(((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1, 0, 1)
    rgb = 1 - rng.uniform(*sat) * (1 - rgb)
    rgb = rgb * 255 * rng.uniform(0.3, 1.0)
    if luma is not None:
        cur = float(rgb @ LUMA)
        rgb = rgb * (luma / max(cur, 1.0)) if luma < cur else 255 - (255 - rgb) * (255 - luma) / max(
            255 - cur, 1.0)
    return np.clip(rgb, 0, 255).astype(np.float32)


def _pattern_patch(rng: np.random.Generator, arr: np.ndarray, full: bool = False) -> None:
    """Stripes or a checkerboard over a random rectangle (or the whole frame)."""
    h, w = arr.shape[:2]
    if full:
        y0, x0, y1, x1 = 0, 0, h, w
    else:
        ph, pw = rng.integers(h // 8, h // 2), rng.integers(w // 8, w // 2)
        y0, x0 = rng.integers(0, h - ph), rng.integers(0, w - pw)
        y1, x1 = y0 + ph, x0 + pw
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    c1, c2 = random_colour(rng), random_colour(rng)
    period = rng.uniform(3, 14)
    if rng.random() < 0.5:
        ang = rng.choice([0.0, np.pi / 2, rng.uniform(0, np.pi)])
        mask = ((xs * np.cos(ang) + ys * np.sin(ang)) / period) % 1.0 < rng.uniform(0.3, 0.7)
    else:
        mask = ((xs // period + ys // period) % 2) < 1
    arr[y0:y1, x0:x1] = np.where(mask[..., None], c1, c2)


def make_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A cluttered static background: smooth colour field, patterns, random shapes, noise texture."""
    grid = rng.uniform(20, 235, size=(rng.integers(2, 5), rng.integers(2, 5), 3)).astype(np.uint8)
    arr = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float32).copy()
    if rng.random() < 0.25:
        _pattern_patch(rng, arr, full=True)
    if rng.random() < 0.5:  # a floor band with its own colour
        y = int(rng.uniform(0.55, 0.85) * height)
        arr[y:] = 0.4 * arr[y:] + 0.6 * random_colour(rng)
    for _ in range(rng.integers(1, 5)):
        _pattern_patch(rng, arr)
    img = Image.fromarray(arr.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(6, 18)):
        colour = tuple(int(c) for c in random_colour(rng))
        x0, y0 = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        x1, y1 = x0 + rng.uniform(0.05, 0.4) * width, y0 + rng.uniform(0.05, 0.4) * height
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 2:  # sticks: limb-like clutter so that "a thin line" alone does not mean "actor"
            draw.line((x0, y0, x1, y1 if rng.random() < 0.5 else y0 - (y1 - y0)), fill=colour,
                      width=int(rng.integers(1, 5)))
        else:
            pts = [(rng.uniform(x0, x1), rng.uniform(y0, y1)) for _ in range(3)]
            draw.polygon(pts, fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3)))
    arr = np.asarray(img, np.float32).copy()
    noise = rng.normal(0, 1, size=(height // 4, width // 4)).astype(np.float32)
    noise = np.asarray(Image.fromarray(noise, mode="F").resize((width, height), Image.BILINEAR))
    arr += rng.uniform(5, 25) * noise[..., None]
    # Flatten the background's contrast a little so that the (high-contrast) actor stays the salient thing.
    mean = arr.reshape(-1, 3).mean(0)
    arr = mean + rng.uniform(0.3, 0.55) * (arr - mean)
    return np.clip(arr, 0, 255).astype(np.float32)


def bounce(x0: float, v: float, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Position of a point moving at speed ``v`` inside [lo, hi], reflecting off the ends."""
    span = max(hi - lo, 1e-6)
    u = np.mod(x0 - lo + v * t, 2 * span)
    return lo + np.where(u > span, 2 * span - u, u)


def make_distractors(rng: np.random.Generator, height: int, width: int, t: np.ndarray) -> list[dict]:
    """Moving objects unrelated to the class: bouncing balls and boxes, a drifting pole."""
    items = []
    for _ in range(rng.integers(1, 3)):
        r = rng.uniform(0.03, 0.08) * height
        speed, ang = rng.uniform(20, 90), rng.uniform(0, 2 * np.pi)
        xs = bounce(rng.uniform(r, width - r), speed * np.cos(ang), t, r, width - r)
        ys = bounce(rng.uniform(r, height - r), speed * np.sin(ang), t, r, height - r)
        items.append({"kind": "ball", "x": xs, "y": ys, "r": r, "colour": random_colour(rng),
                      "front": rng.random() < 0.5})
    for _ in range(rng.integers(0, 2)):
        half = tuple(rng.uniform(0.025, 0.07, size=2) * height)
        speed, ang = rng.uniform(10, 70), rng.uniform(0, 2 * np.pi)
        m = max(half)
        items.append({"kind": "box", "x": bounce(rng.uniform(m, width - m), speed * np.cos(ang), t, m, width - m),
                      "y": bounce(rng.uniform(m, height - m), speed * np.sin(ang), t, m, height - m),
                      "half": half, "angle": rng.uniform(0, np.pi) + rng.uniform(-3, 3) * t,
                      "colour": random_colour(rng), "front": rng.random() < 0.5})
    if rng.random() < 0.5:
        x = rng.uniform(0.05, 0.95) * width + rng.uniform(-12, 12) * t
        top, length = rng.uniform(-0.1, 0.4) * height, rng.uniform(0.4, 0.9) * height
        tilt = rng.uniform(-0.25, 0.25)
        items.append({"kind": "pole", "x": x, "top": top, "len": length, "tilt": tilt,
                      "r": rng.uniform(1.2, 3.0), "colour": random_colour(rng), "front": False})
    return items


def draw_distractors(canvas: Canvas, items: list[dict], frame: int, front: bool) -> None:
    for it in items:
        if it["front"] != front:
            continue
        if it["kind"] == "ball":
            p = (it["x"][frame], it["y"][frame])
            canvas.capsule(p, p, it["r"], it["colour"])
        elif it["kind"] == "box":
            canvas.box((it["x"][frame], it["y"][frame]), it["half"], it["angle"][frame], it["colour"])
        else:
            x, top = it["x"][frame], it["top"]
            p1 = (x + it["len"] * np.sin(it["tilt"]), top + it["len"] * np.cos(it["tilt"]))
            canvas.capsule((x, top), p1, it["r"], it["colour"])
