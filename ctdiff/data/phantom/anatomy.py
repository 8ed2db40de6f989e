"""The phantom's anatomy: implicit shapes with signed distances, the random per-case anatomy
(:func:`draw_anatomy`), its rendering into HU and labels with partial-volume edges, and the
per-tissue texture. Part of :mod:`ctdiff.data.phantom` (see its docstring for the geometry).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from ctdiff.data.hu import AIR_HU

MAX_BODY_SEMI_LR_MM = 190.0

# ---- calibration to real CT (benchmarks/calibrate_phantom.py; table and figures in docs/real-ct.md)
# Measured on the real chest/abdomen CT of ``python -m ctdiff real-ct`` at its 0.703 mm spacing,
# ROI by ROI; each phantom figure must lie inside the real scan's 5th-95th percentile ROI spread.
# - Trabecular (vertebral) bone: real ROI means 65-299 HU (median 135); the earlier 220-360 HU
#   put the phantom's median at 309 HU, above the band.
TRABECULAR_HU = (150.0, 280.0)
# - Muscle texture: SD in 11 mm ROIs of real back muscle is 16-52 HU (median 30: fibres and fat
#   marbling on top of the noise); a 5 HU texture left the phantom at 14 HU with that noise.
MUSCLE_TEXTURE_SD = 15.0

# Tissue classes of the label map that ``make_phantom(return_labels=True)`` returns.
LABELS: dict[str, int] = {
    "air": 0,
    "table": 1,
    "skin": 2,
    "subcutaneous_fat": 3,
    "muscle": 4,
    "pelvic_fat": 5,
    "vessels": 6,
    "cortical_bone": 7,
    "trabecular_bone": 8,
    "bladder": 9,
    "bladder_wall": 10,
    "prostate": 11,
    "seminal_vesicles": 12,
    "rectum": 13,
    "bowel": 14,
    "gas": 15,
    "intermuscular_fat": 16,
}

# SD (HU) of the smooth anatomical texture added per tissue class (trabecular pattern, fat
# marbling of muscle, mottled faeces). Urine is homogeneous: noise can be measured there.
_TEXTURE_SD = {
    "subcutaneous_fat": 6.0,
    "intermuscular_fat": 6.0,
    "pelvic_fat": 8.0,
    "muscle": MUSCLE_TEXTURE_SD,
    "vessels": 3.0,
    "cortical_bone": 40.0,
    "trabecular_bone": 45.0,
    "prostate": 4.0,
    "seminal_vesicles": 4.0,
    "rectum": 25.0,
    "bowel": 12.0,
}
_FAR = 1.0e6  # "unbounded" bounding-box extent, mm


# ----------------------------------------------------------------------------- implicit shapes
@dataclasses.dataclass(frozen=True)
class _Shape:
    """A solid given by an approximate signed distance (mm, negative inside) and a bounding box.

    ``sdf(X, Y, Z)`` takes broadcastable world-coordinate arrays. The box (``lo``, ``hi``) bounds
    the inside and limits where the function is evaluated, which keeps rendering fast.
    """

    sdf: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def inset(self, t: float) -> _Shape:
        """The solid shrunk by ``t`` mm (grown if ``t`` < 0)."""
        f = self.sdf
        return _Shape(lambda X, Y, Z: f(X, Y, Z) + t, tuple(v + t for v in self.lo), tuple(v - t for v in self.hi))

    def __or__(self, other: _Shape) -> _Shape:
        f, g = self.sdf, other.sdf
        lo = tuple(map(min, self.lo, other.lo))
        hi = tuple(map(max, self.hi, other.hi))
        return _Shape(lambda X, Y, Z: np.minimum(f(X, Y, Z), g(X, Y, Z)), lo, hi)

    def __and__(self, other: _Shape) -> _Shape:
        f, g = self.sdf, other.sdf
        lo = tuple(map(max, self.lo, other.lo))
        hi = tuple(map(min, self.hi, other.hi))
        return _Shape(lambda X, Y, Z: np.maximum(f(X, Y, Z), g(X, Y, Z)), lo, hi)

    def __sub__(self, other: _Shape) -> _Shape:
        f, g = self.sdf, other.sdf
        return _Shape(lambda X, Y, Z: np.maximum(f(X, Y, Z), -g(X, Y, Z)), self.lo, self.hi)


def _union(shapes: list[_Shape]) -> _Shape:
    out = shapes[0]
    for s in shapes[1:]:
        out = out | s
    return out


def _rotation(z_deg: float = 0.0, x_deg: float = 0.0, y_deg: float = 0.0) -> np.ndarray:
    """Rotation matrix R = Rz @ Rx @ Ry (columns: the shape's local axes in world coordinates)."""
    a, b, c = (math.radians(v) for v in (z_deg, x_deg, y_deg))
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    ry = np.array([[math.cos(c), 0, math.sin(c)], [0, 1, 0], [-math.sin(c), 0, math.cos(c)]])
    return rz @ rx @ ry


def _ellipsoid(center, radii, rot: np.ndarray | None = None) -> _Shape:
    """Ellipsoid; distance by the k0*(k0-1)/k1 approximation (exact on the surface, good near it)."""
    c = np.asarray(center, dtype=float)
    r = np.asarray(radii, dtype=float)
    R = np.eye(3) if rot is None else np.asarray(rot, dtype=float)
    # plain Python floats: NumPy keeps float32 grids float32 with them (numpy scalars would promote)
    cl, rl, Rl, rmin = c.tolist(), r.tolist(), R.tolist(), float(r.min())

    def sdf(X, Y, Z):
        d = (X - cl[0], Y - cl[1], Z - cl[2])
        # local coordinates: R^T (p - c)
        loc = [Rl[0][i] * d[0] + Rl[1][i] * d[1] + Rl[2][i] * d[2] for i in range(3)]
        k0 = np.sqrt(sum((loc[i] / rl[i]) ** 2 for i in range(3)))
        k1 = np.sqrt(sum((loc[i] / rl[i] ** 2) ** 2 for i in range(3)))
        return np.where(k1 > 1e-9, k0 * (k0 - 1.0) / np.maximum(k1, 1e-9), -rmin)

    half = np.sqrt((R**2) @ (r**2))  # half-extent of the rotated ellipsoid along each world axis
    return _Shape(sdf, tuple(c - half), tuple(c + half))


def _sphere(center, radius: float) -> _Shape:
    c = np.asarray(center, dtype=float)
    cl, radius = c.tolist(), float(radius)

    def sdf(X, Y, Z):
        return np.sqrt((X - cl[0]) ** 2 + (Y - cl[1]) ** 2 + (Z - cl[2]) ** 2) - radius

    return _Shape(sdf, tuple(c - radius), tuple(c + radius))


def _tube(points, radii) -> _Shape:
    """A tube along a polyline; ``radii`` per point (linearly interpolated along each segment)."""
    pts = np.asarray(points, dtype=float)
    rad = np.broadcast_to(np.asarray(radii, dtype=float), (len(pts),))
    segments = [
        (pts[k].tolist(), (pts[k + 1] - pts[k]).tolist(), float(rad[k]), float(rad[k + 1] - rad[k]))
        for k in range(len(pts) - 1)
    ]

    def sdf(X, Y, Z):
        out = None
        for a, ba, r0, dr in segments:
            pa = (X - a[0], Y - a[1], Z - a[2])
            norm2 = ba[0] ** 2 + ba[1] ** 2 + ba[2] ** 2
            t = np.clip((pa[0] * ba[0] + pa[1] * ba[1] + pa[2] * ba[2]) / norm2, 0.0, 1.0)
            dist = np.sqrt((pa[0] - t * ba[0]) ** 2 + (pa[1] - t * ba[1]) ** 2 + (pa[2] - t * ba[2]) ** 2)
            d = dist - (r0 + t * dr)
            out = d if out is None else np.minimum(out, d)
        return out

    rmax = float(rad.max())
    return _Shape(sdf, tuple(pts.min(axis=0) - rmax), tuple(pts.max(axis=0) + rmax))


def _halfspace(normal, point) -> _Shape:
    """Points p with (p - point) . normal <= 0."""
    n = np.asarray(normal, dtype=float)
    n = n / np.linalg.norm(n)
    q = np.asarray(point, dtype=float)
    lo = [-_FAR] * 3
    hi = [_FAR] * 3
    for i in range(3):  # axis-aligned half-spaces get a finite box side
        if abs(n[i]) > 0.999:
            if n[i] > 0:
                hi[i] = q[i]
            else:
                lo[i] = q[i]

    nl, ql = n.tolist(), q.tolist()

    def sdf(X, Y, Z):
        return (X - ql[0]) * nl[0] + (Y - ql[1]) * nl[1] + (Z - ql[2]) * nl[2]

    return _Shape(sdf, tuple(lo), tuple(hi))


# np.power itself; the determinism test swaps in a version that is off by an ULP
_power64 = np.power


def _pow(x: np.ndarray, p: float) -> np.ndarray:
    """``x ** p`` evaluated in float64 and rounded back to ``x``'s dtype.

    Why not ``x ** p`` on the float32 grids: NumPy dispatches float32 ``power`` by CPU (Intel's SVML
    on AVX-512 machines, the C library elsewhere), and the two differ in the last bit now and then.
    The superelliptic body and muscle outlines carry that bit into partial-volume edges and label
    masks, so the same seed drew phantoms that differed by a few voxels from machine to machine, and
    the demo's shipped report (bound to its scans' bytes) did not match a workspace built on another
    CPU. In float64 the libraries agree to an ULP or two, which rounds to the same float32 except with
    probability ~1e-8 per voxel.
    """
    return _power64(np.asarray(x, dtype=np.float64), p).astype(np.asarray(x).dtype, copy=False)


def _cylinder_xy(
    cx: float,
    cy: float,
    semi_x: Callable,
    semi_y: Callable,
    power: float = 2.0,
    z_range: tuple[float, float] = (-_FAR, _FAR),
    max_semi: tuple[float, float] | None = None,
) -> _Shape:
    """Superelliptic cylinder along z whose semi-axes may depend on z (callables of Z).

    ``(|x|/a)^p + (|y|/b)^p <= 1``; the distance is the implicit function divided by its gradient
    norm (first-order accurate near the surface, which is where layers are painted).
    """
    p, cx, cy = float(power), float(cx), float(cy)

    def sdf(X, Y, Z):
        a, b = semi_x(Z), semi_y(Z)
        u = np.maximum(np.abs(X - cx) / a, 1e-6)
        v = np.maximum(np.abs(Y - cy) / b, 1e-6)
        r = _pow(_pow(u, p) + _pow(v, p), 1.0 / p)
        grad = _pow(r, 1.0 - p) * np.sqrt((_pow(u, p - 1) / a) ** 2 + (_pow(v, p - 1) / b) ** 2)
        return (r - 1.0) / np.maximum(grad, 1e-9)

    mx, my = max_semi if max_semi is not None else (_FAR, _FAR)
    return _Shape(sdf, (cx - mx, cy - my, z_range[0]), (cx + mx, cy + my, z_range[1]))


# ------------------------------------------------------------------------------------ canvas
class _Canvas:
    """HU and label arrays on the voxel grid, painted shape by shape with partial-volume edges."""

    def __init__(self, shape, spacing, origin):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = np.asarray(spacing, dtype=float)
        self.origin = np.asarray(origin, dtype=float)
        self.hu = np.full(self.shape, AIR_HU, dtype=np.float32)
        self.labels = np.zeros(self.shape, dtype=np.uint8)
        self.h = float(np.mean(self.spacing))  # margin around bounding boxes, mm

    def _box(self, shape: _Shape):
        sl = []
        for i in range(3):
            lo = (shape.lo[i] - self.h - self.origin[i]) / self.spacing[i]
            hi = (shape.hi[i] + self.h - self.origin[i]) / self.spacing[i]
            i0 = max(int(math.ceil(lo)), 0)
            i1 = min(int(math.floor(hi)) + 1, self.shape[i])
            if i0 >= i1:
                return None
            sl.append(slice(i0, i1))
        return tuple(sl)

    def _edge_width(self, d: np.ndarray) -> np.ndarray | float:
        """Width (mm) of a voxel across the surface: sum_i spacing_i * |n_i| for unit normal n.

        The gradient of a distance function in voxel-index units is spacing_i * n_i, so the sum of
        its absolute components is that width; thick slices then blur z-edges more than in-plane
        edges, as partial volume does in real CT.
        """
        if min(d.shape) < 2:
            return self.h
        width = sum(np.abs(g) for g in np.gradient(d))
        return np.maximum(width, 0.5 * float(self.spacing.min()))

    def paint(self, shape: _Shape, hu: float, label: str) -> None:
        sl = self._box(shape)
        if sl is None:
            return
        # float32 world coordinates: half the memory traffic of float64, ample for millimetres
        X = (self.origin[0] + self.spacing[0] * np.arange(sl[0].start, sl[0].stop)).astype(np.float32)[:, None, None]
        Y = (self.origin[1] + self.spacing[1] * np.arange(sl[1].start, sl[1].stop)).astype(np.float32)[None, :, None]
        Z = (self.origin[2] + self.spacing[2] * np.arange(sl[2].start, sl[2].stop)).astype(np.float32)[None, None, :]
        sub = self.hu[sl]
        d = np.broadcast_to(shape.sdf(X, Y, Z), sub.shape).astype(np.float32)
        alpha = np.clip(0.5 - d / self._edge_width(d), 0.0, 1.0)
        sub += alpha * (np.float32(hu) - sub)
        self.labels[sl][d <= 0] = LABELS[label]


# --------------------------------------------------------------------------- random anatomy
def draw_anatomy(rng: np.random.Generator) -> dict[str, Any]:
    """Draw one case's anatomy parameters (JSON-able, rounded so they describe the case exactly)."""

    def u(lo, hi, nd=2):
        return round(float(rng.uniform(lo, hi)), nd)

    def g(mu, sd, nd=2):
        return round(float(rng.normal(mu, sd)), nd)

    s = u(0.92, 1.08, 3)
    adiposity = u(0.0, 1.0, 3)
    fill = u(0.0, 1.0, 3)
    muscle_lr = round(s * u(152, 166), 2)
    # hips at most 380 mm wide, so that every case fits the default 420 mm field of view
    fat_lr = round(min(8 + 38 * adiposity + g(0, 2), MAX_BODY_SEMI_LR_MM - muscle_lr), 2)
    params: dict[str, Any] = {
        "pelvis_scale": s,
        "shift_mm": [g(0.0, 5.0), g(0.0, 5.0)],
        "body": {
            "muscle_semi_lr_mm": muscle_lr,
            "muscle_semi_ap_mm": round(s * u(98, 112), 2),
            "adiposity": adiposity,
            "fat_lateral_mm": fat_lr,
            "fat_anterior_mm": round(8 + 42 * adiposity + g(0, 2), 2),
            "fat_posterior_mm": round(5 + 14 * adiposity + g(0, 1), 2),
            "skin_mm": u(1.5, 3.0),
            "superellipse_power": u(2.1, 2.7),
            "flat_back_fraction": u(0.90, 0.96),
            "table_gap_mm": u(8, 20),
        },
        "hu": {
            "skin": u(25, 55),
            "subcutaneous_fat": u(-110, -85),
            "pelvic_fat": u(-105, -80),
            "muscle": u(40, 58),
            "vessels": u(35, 50),
            "cortical_bone": u(850, 1150),
            "trabecular_bone": u(*TRABECULAR_HU),
            "bladder": u(0, 15),
            "bladder_wall": u(35, 50),
            "prostate": u(32, 50),
            "seminal_vesicles": u(25, 42),
            "rectum_wall": u(35, 50),
            "rectal_content": u(-40, 30),
            "bowel_wall": u(35, 50),
            "table": u(150, 300),
        },
        "bone": {
            "cortical_mm": u(2.0, 3.5),
            "femoral_head_radius_mm": round(s * u(22, 26), 2),
            "joint_space_mm": u(2.5, 4.0),
            "iliac_crest_z_mm": round(s * u(68, 88), 2),
            "iliac_half_thickness_mm": u(5.0, 7.0),
            "sacral_tilt_deg": u(20, 38),
        },
    }
    # bladder: volume 60..500 ml; an emptier bladder is flatter
    volume_ml = round(60 + 440 * fill, 1)
    ratios = np.array([1.2, 0.95, 0.65 + 0.35 * fill])
    k = (volume_ml * 1000.0 / (4.0 / 3.0 * math.pi * ratios.prod())) ** (1.0 / 3.0)
    prostate = {
        "center_mm": [g(0, 2), round(s * u(8, 18), 2), round(s * u(-64, -50), 2)],
        "radii_mm": [u(18, 27), u(13, 19), u(15, 22)],
        "tilt_deg": g(0, 8),
    }
    bladder_radii = [round(float(v), 2) for v in k * ratios]
    prostate_top = prostate["center_mm"][2] + prostate["radii_mm"][2]
    params["bladder"] = {
        "filling": fill,
        "volume_ml": volume_ml,
        "radii_mm": bladder_radii,
        "center_mm": [
            g(0, 4),
            round(min(s * u(14, 24), s * 48 - bladder_radii[1]), 2),
            round(prostate_top + 0.8 * bladder_radii[2], 2),
        ],
        "wall_mm": u(2.0, 3.5),
        "yaw_deg": g(0, 8),
    }
    params["prostate"] = prostate
    params["prostate"]["volume_ml"] = round(4.0 / 3.0 * math.pi * float(np.prod(prostate["radii_mm"])) / 1000.0, 1)
    params["seminal_vesicles"] = {"angle_deg": u(15, 40), "length_mm": u(14, 22)}

    # rectum: a tube from the anal canal up along the sacrum into the sigmoid
    base = np.array(
        [
            [0, -26, -100],
            [0, -24, -68],
            [0, -34, -40],
            [0, -52, -10],
            [0, -56, 18],
            [14, -46, 44],
            [34, -26, 64],
            [46, -8, 92],
        ],
        dtype=float,
    )
    base[:, :2] *= s
    base[1:, 0] += rng.normal(0, 4, size=len(base) - 1)
    base[1:, 1] += rng.normal(0, 4, size=len(base) - 1)
    r_amp = u(13, 22)
    radii = [8.0, 10.0, r_amp, r_amp, 0.9 * r_amp, 13.0, 12.0, 12.0]
    n_gas = int(rng.integers(0, 4))
    gas = []
    for _ in range(n_gas):
        seg = int(rng.integers(2, 6))
        t = float(rng.uniform(0, 1))
        c = base[seg] + t * (base[seg + 1] - base[seg])
        rr = radii[seg] + t * (radii[seg + 1] - radii[seg])
        c = c + np.array([0.0, 0.45 * rr, 0.0])  # gas floats anteriorly in a supine patient
        gas.append(
            {"center_mm": [round(float(v), 2) for v in c], "radius_mm": round(float(rng.uniform(4, 0.8 * rr)), 2)}
        )
    params["rectum"] = {
        "path_mm": [[round(float(v), 2) for v in p] for p in base],
        "radii_mm": [round(float(r), 2) for r in radii],
        "wall_mm": u(2.0, 3.5),
        "gas_pockets": gas,
    }

    # bowel loops in the false pelvis: persistent random walks
    loops = []
    for _ in range(int(rng.integers(2, 7))):
        p = np.array([rng.uniform(-70, 70) * s, rng.uniform(-20, 55) * s, rng.uniform(10, 75)])
        direction = rng.normal(size=3)
        pts = [p.copy()]
        for _ in range(int(rng.integers(4, 9))):
            direction = 0.6 * direction / np.linalg.norm(direction) + 0.8 * rng.normal(size=3) / math.sqrt(3)
            p = p + rng.uniform(12, 22) * direction / np.linalg.norm(direction)
            pts.append(p.copy())
        kind = str(rng.choice(["fluid", "faeces", "air-fluid"], p=[0.45, 0.3, 0.25]))
        radius = u(8, 15)
        loops.append(
            {
                "path_mm": [[round(float(v), 2) for v in q] for q in pts],
                "radius_mm": radius,
                "content": kind,
                "content_hu": u(-30, 30) if kind == "faeces" else u(0, 35),
                "gas_level_mm": round(float(np.mean([q[1] for q in pts]) + rng.uniform(-0.3, 0.6) * radius), 2),
            }
        )
    params["bowel_loops"] = loops
    # drawn last so that adding them kept every earlier parameter of a seed unchanged
    params["fat_planes"] = {"depth_fraction": u(0.72, 0.85), "thickness_mm": u(1.5, 4.0)}
    return params


# ------------------------------------------------------------------------------- rendering
def _render(params: dict[str, Any], canvas: _Canvas, table: bool) -> None:
    """Paint the anatomy of ``params`` onto ``canvas`` (world mm, already shifted)."""
    s = params["pelvis_scale"]
    hu = params["hu"]
    body = params["body"]
    bone = params["bone"]
    z_hip = -55.0 * s

    def taper(semi: float, width: float) -> Callable:
        # widest at the hips, narrowing towards the waist and slightly towards the thighs
        return lambda Z: semi * (1.0 - width * ((Z - z_hip) / 140.0) ** 2)

    a_m, b_m = body["muscle_semi_lr_mm"], body["muscle_semi_ap_mm"]
    cy_m = -8.0 * s
    q = body["superellipse_power"]
    fat_l, fat_a, fat_p = body["fat_lateral_mm"], body["fat_anterior_mm"], body["fat_posterior_mm"]
    a_b, b_b = a_m + fat_l, b_m + 0.5 * (fat_a + fat_p)
    cy_b = cy_m + 0.5 * (fat_a - fat_p)
    y_back = cy_b - body["flat_back_fraction"] * b_b
    body_shape = _cylinder_xy(0.0, cy_b, taper(a_b, 0.18), taper(b_b, 0.10), q, max_semi=(a_b, b_b))
    body_shape = body_shape & _halfspace([0, -1, 0], [0, y_back, 0])
    muscle_shape = _cylinder_xy(0.0, cy_m, taper(a_m, 0.22), taper(b_m, 0.10), q, max_semi=(a_m, b_m))

    if table:
        y_top = y_back - body["table_gap_mm"]
        half_w = min(175.0, math.sqrt(max(205.0**2 - (y_top - 8) ** 2, 50.0**2)))
        curve = 0.0004  # the table top is slightly concave (about 9 mm rise at 150 mm off-centre)

        def table_sdf(X, Y, Z):
            surface = y_top - 3.0 + curve * X**2
            return np.maximum(np.abs(Y - surface) - 3.0, np.abs(X) - half_w) + 0 * Z

        canvas.paint(
            _Shape(table_sdf, (-half_w, y_top - 8.0, -_FAR), (half_w, y_top + curve * half_w**2, _FAR)),
            hu["table"],
            "table",
        )

    canvas.paint(body_shape, hu["skin"], "skin")
    canvas.paint(body_shape.inset(body["skin_mm"]), hu["subcutaneous_fat"], "subcutaneous_fat")
    canvas.paint(muscle_shape & body_shape.inset(body["skin_mm"] + 3.0), hu["muscle"], "muscle")

    # intermuscular fat planes: posterolateral (between the gluteal muscles) and anterior arcs
    fp = params["fat_planes"]
    k = fp["depth_fraction"]
    plane = _cylinder_xy(0.0, cy_m, taper(k * a_m, 0.22), taper(k * b_m, 0.10), q, max_semi=(a_m, b_m))
    half_t = 0.5 * fp["thickness_mm"]
    shell = _Shape(lambda X, Y, Z, f=plane.sdf: np.abs(f(X, Y, Z)) - half_t, plane.lo, plane.hi)
    canvas.paint(shell & _halfspace([0, 1, 0], [0, -30 * s, 0]), hu["subcutaneous_fat"], "intermuscular_fat")
    for side in (-1, 1):
        canvas.paint(
            shell & _halfspace([0, -1, 0], [0, 30 * s, 0]) & _halfspace([-side, 0, 0], [side * 60 * s, 0, 0]),
            hu["subcutaneous_fat"],
            "intermuscular_fat",
        )

    # fat spaces: true and false pelvis, ischiorectal fossae, femoral triangles
    cavity = _union(
        [
            _ellipsoid([0, -10 * s, -30 * s], [58 * s, 55 * s, 52 * s]),
            _ellipsoid([0, 8 * s, 50 * s], [82 * s, 62 * s, 52 * s]),
        ]
    )
    fat_spaces = [cavity]
    for side in (-1, 1):
        fat_spaces.append(_ellipsoid([side * 30 * s, -42 * s, -80 * s], [20 * s, 28 * s, 26 * s]))
        fat_spaces.append(_ellipsoid([side * 82 * s, 40 * s, -68 * s], [24 * s, 14 * s, 34 * s]))
    canvas.paint(_union(fat_spaces), hu["pelvic_fat"], "pelvic_fat")

    # psoas and iliacus muscles and the iliac/femoral vessels run through the fat
    psoas, vessels = [], []
    for side in (-1, 1):
        psoas.append(
            _tube(
                [
                    [side * 42 * s, -38 * s, 120],
                    [side * 55 * s, -18 * s, 30 * s],
                    [side * 66 * s, 10 * s, -20 * s],
                    [side * 72 * s, 30 * s, -45 * s],
                ],
                [22 * s, 20 * s, 17 * s, 15 * s],
            )
        )
        psoas.append(
            _ellipsoid([side * 86 * s, -10 * s, 55 * s], [14 * s, 40 * s, 40 * s], _rotation(z_deg=side * -35))
        )
        vessels.append(
            _tube(
                [
                    [side * 30 * s, -20 * s, 120],
                    [side * 48 * s, 0 * s, 20 * s],
                    [side * 70 * s, 42 * s, -45 * s],
                    [side * 76 * s, 46 * s, -130],
                ],
                4.5 * s,
            )
        )
        vessels.append(
            _tube(
                [
                    [side * 22 * s, -28 * s, 120],
                    [side * 44 * s, -10 * s, 20 * s],
                    [side * 60 * s, 38 * s, -45 * s],
                    [side * 66 * s, 44 * s, -130],
                ],
                6.0 * s,
            )
        )
    canvas.paint(_union(psoas), hu["muscle"], "muscle")
    canvas.paint(_union(vessels), hu["vessels"], "vessels")

    # ---- bones
    r_h = bone["femoral_head_radius_mm"]
    js = bone["joint_space_mm"]
    tilt = bone["sacral_tilt_deg"]
    ht = bone["iliac_half_thickness_mm"]
    z_crest = bone["iliac_crest_z_mm"]
    parts = []
    for side in (-1, 1):
        head_c = [side * 90 * s, -5 * s, -35 * s]
        troch = [side * 128 * s, -12 * s, -58 * s]
        femur = _union(
            [
                _sphere(head_c, r_h),
                _tube([head_c, troch], 0.62 * r_h),
                _ellipsoid([side * 131 * s, -16 * s, -56 * s], [13 * s, 16 * s, 20 * s]),
                _tube([troch, [side * 118 * s, -4 * s, -260]], 14 * s),
            ]
        )
        # ilium: a shell of a z-widening elliptic cylinder (the pelvic bowl), cut to the wing
        ilium = _cylinder_xy(
            0.0,
            -18 * s,
            lambda Z, s=s: s * (72 + 0.38 * (Z / s + 25)),
            lambda Z, s=s: s * (58 + 0.22 * (Z / s + 25)),
            2.0,
            z_range=(-_FAR, _FAR),
            max_semi=(140 * s, 110 * s),
        )
        ilium_shell = _Shape(lambda X, Y, Z, f=ilium.sdf: np.abs(f(X, Y, Z)) - ht, ilium.lo, ilium.hi)
        wing = (
            ilium_shell
            & _halfspace([0, 0, 1], [0, 0, z_crest])
            & _halfspace([0, 0, -1], [0, 0, -22 * s])
            & _halfspace([0, 1, 0], [0, 26 * s, 0])
            & _halfspace([-side, 0, 0], [side * 44 * s, 0, 0])
        )
        opening = np.array([side * 1.0, 0.35, -0.6])
        cup = _sphere(head_c, r_h + js + 11 * s) - _sphere(head_c, r_h + js) & _halfspace(
            opening, np.asarray(head_c) + 0.15 * r_h * opening / np.linalg.norm(opening)
        )
        hip_bone = _union(
            [
                wing,
                cup,
                _tube([[side * 80 * s, 12 * s, -28 * s], [side * 15 * s, 50 * s, -46 * s]], 9 * s),
                _ellipsoid([side * 14 * s, 50 * s, -53 * s], [11 * s, 10 * s, 15 * s]),
                _tube([[side * 14 * s, 46 * s, -64 * s], [side * 56 * s, -30 * s, -90 * s]], 7 * s),
                _tube([[side * 84 * s, -22 * s, -42 * s], [side * 58 * s, -38 * s, -90 * s]], 11 * s),
                _ellipsoid([side * 58 * s, -40 * s, -92 * s], [14 * s, 17 * s, 14 * s]),
            ]
        ) - _sphere(head_c, r_h + js)
        parts += [femur, hip_bone]
    sac_rot = _rotation(x_deg=-tilt)  # top of the sacrum tilted anteriorly
    parts += [
        _ellipsoid([0, -74 * s, 52 * s], [52 * s, 17 * s, 28 * s], sac_rot),
        _ellipsoid([0, -88 * s, 12 * s], [30 * s, 13 * s, 30 * s], sac_rot),
        _tube([[0, -94 * s, -18 * s], [0, -84 * s, -44 * s]], 6 * s),
    ]
    bones = _union(parts)
    canvas.paint(bones, hu["cortical_bone"], "cortical_bone")
    canvas.paint(bones.inset(bone["cortical_mm"]), hu["trabecular_bone"], "trabecular_bone")

    # ---- bowel loops (only inside the false-pelvis fat), with air-fluid levels
    soft_space = cavity.inset(2.0)
    for loop in params["bowel_loops"]:
        tube = _tube(loop["path_mm"], loop["radius_mm"]) & soft_space
        canvas.paint(tube, hu["bowel_wall"], "bowel")
        lumen = tube.inset(2.5)
        canvas.paint(lumen, loop["content_hu"], "bowel")
        if loop["content"] == "air-fluid":
            canvas.paint(lumen & _halfspace([0, -1, 0], [0, loop["gas_level_mm"], 0]), AIR_HU, "gas")

    # ---- bladder, seminal vesicles, prostate
    bl = params["bladder"]
    bladder = _ellipsoid(bl["center_mm"], bl["radii_mm"], _rotation(z_deg=bl["yaw_deg"]))
    canvas.paint(bladder, hu["bladder_wall"], "bladder_wall")
    canvas.paint(bladder.inset(bl["wall_mm"]), hu["bladder"], "bladder")

    pr = params["prostate"]
    pc, prad = pr["center_mm"], pr["radii_mm"]
    sv = params["seminal_vesicles"]
    vesicles = [
        _ellipsoid(
            [pc[0] + side * 0.9 * sv["length_mm"], pc[1] - 16 * s, pc[2] + prad[2] + 4],
            [sv["length_mm"], 5.5, 7.0],
            _rotation(z_deg=side * sv["angle_deg"]),
        )
        for side in (-1, 1)
    ]
    canvas.paint(_union(vesicles), hu["seminal_vesicles"], "seminal_vesicles")
    canvas.paint(_ellipsoid(pc, prad, _rotation(x_deg=pr["tilt_deg"])), hu["prostate"], "prostate")

    # ---- rectum with faeces and gas pockets
    rc = params["rectum"]
    rectum = _tube(rc["path_mm"], rc["radii_mm"])
    canvas.paint(rectum, hu["rectum_wall"], "rectum")
    lumen = rectum.inset(rc["wall_mm"])
    canvas.paint(lumen, hu["rectal_content"], "rectum")
    for pocket in rc["gas_pockets"]:
        canvas.paint(_sphere(pocket["center_mm"], pocket["radius_mm"]) & lumen, AIR_HU, "gas")


def _texture(labels: np.ndarray, spacing, rng: np.random.Generator) -> np.ndarray:
    """Smooth random texture (unit SD field, ~2 mm correlation) scaled per tissue class."""
    field = rng.standard_normal(labels.shape, dtype=np.float32)
    sigma = [max(2.0 / float(sp), 0.5) for sp in spacing]
    field = ndimage.gaussian_filter(field, sigma=sigma, mode="wrap")
    field /= max(float(field.std()), 1e-6)
    amp = np.zeros(max(LABELS.values()) + 1, dtype=np.float32)
    for name, sd in _TEXTURE_SD.items():
        amp[LABELS[name]] = sd
    return amp[labels] * field
