"""A client-side CT viewer for the app: linked panes around NiiVue, as a Streamlit component.

``ct_viewer([ViewerVolume(...), ViewerVolume(...)], layout="side by side", linked=True,
window=(400, 40), key="viewer")`` shows each volume in its own pane. After the volumes arrived,
everything happens in the browser without a Streamlit rerun:

- scrolling: mouse wheel, arrow keys (one slice), PageUp/PageDown (ten), Home/End;
- window/level: right-drag, the preset buttons (from :data:`ctdiff.data.display.WINDOW_PRESETS`) or a
  typed W/L; zoom: ctrl+wheel or +/-, ``0`` resets; pan: middle-drag or shift+left-drag;
- axial, coronal, sagittal, or all three planes with a crosshair (left click moves it);
- HU and voxel index (x, y, z) under the cursor, orientation labels, radiological convention;
- linked panes share the slice position in mm, zoom, pan and window; the A/B layout shows one pane
  at a time and toggles with the button or the ``T`` key, keeping the position.

**Transport.** Each volume is an uncompressed NIfTI-1 file of int16 HU, ``352 + 2 * x * y * z``
bytes: its size depends only on the shape, never on the voxel values, so the payload says nothing
about which cohort a volume comes from (the reader page relies on this; a PNG or gzip payload
would). With ``transport="http"`` (the default inside a Streamlit server) the bytes are handed to
Streamlit's media file manager and the browser fetches them over HTTP (``/media/<hash>.bin``); the
component's arguments carry only the URL. The browser asks for them as a byte range: Streamlit
gzips a whole media response on every request (level 9: slower than the transfer on localhost, and
the compressed size would tell the cohort), and never a range response. A 512x512x133 pair (140 MB)
sent as component arguments instead never arrived within 5 minutes on the 2-core test machine
(protobuf encoding, websocket and a structured clone into the iframe). ``transport="bytes"`` sends
the file as a bytes argument over the websocket (no server needed beyond the component; fine for
small volumes). Either way a volume travels once: the browser reloads a pane only when its volume
``id`` changes, and reruns with the same volumes re-send nothing but the small JSON arguments.

**Geometry.** Volumes are sent in the toolkit's (x, y, z) RAS+ voxel order with an axis-aligned
affine built from the spacing. With ``align="centre"`` (default) each volume is placed with its
centre at 0 mm, so a generated and a real scan of different origin or extent line up centre to
centre and linked scrolling keeps the same position in mm; ``align="affine"`` keeps each volume's
own origin (scans of one scanner frame).

**Return value.** None until the user clicks a voxel with ``return_clicks=True``; then
``{"event": "click", "pane", "label", "id", "voxel": [x, y, z], "mm": [x, y, z], "hu", "n"}``
(``n`` counts clicks, so two clicks on one voxel are two values). Without ``return_clicks`` the
viewer never causes a rerun.

Keys the viewer does not use (e.g. a reader form's shortcuts) are passed on to the page around it
(``forward_keys``). The frontend source is in ``frontend/src`` (``npm ci && npm run build``); the
built bundle in ``frontend/build`` is committed, so users need no node.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ctdiff.data.display import WINDOW_PRESETS
from ctdiff.data.hu import AIR_HU
from ctdiff.data.io import to_int16_hu

BUILD_DIR = Path(__file__).resolve().parent / "frontend" / "build"
LAYOUTS = ("side by side", "A/B")
PLANES = ("axial", "coronal", "sagittal", "multiplanar")
NIFTI_HEADER_BYTES = 352  # NIfTI-1 header (348) + the 4-byte extension flag

_component = None


def _component_func():
    """Declared on first use: importing this module must not need a Streamlit runtime."""
    global _component
    if _component is None:
        import streamlit.components.v1 as components

        _component = components.declare_component("ct_viewer", path=str(BUILD_DIR))
    return _component


def nifti_header(shape: Sequence[int], spacing: Sequence[float], origin: Sequence[float] = (0.0, 0.0, 0.0)) -> bytes:
    """The 352 bytes before the voxels of :func:`nifti_bytes`: int16, axis-aligned RAS+ affine, mm."""
    import nibabel as nib

    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive numbers in mm, got {spacing}")
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [float(o) for o in origin]
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(tuple(int(n) for n in shape))
    hdr.set_data_dtype(np.int16)
    hdr.set_xyzt_units("mm")
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_slope_inter(1.0, 0.0)
    hdr["vox_offset"] = NIFTI_HEADER_BYTES
    out = hdr.binaryblock + b"\0\0\0\0"  # no extensions
    assert len(out) == NIFTI_HEADER_BYTES
    return out


def int16_voxels(array: np.ndarray) -> np.ndarray:
    """``array`` as int16 HU (rounded, clipped; NaN shown as air), Fortran-ordered like NIfTI voxels."""
    a = np.asarray(array)
    if a.ndim != 3:
        raise ValueError(f"the viewer shows 3D volumes, got an array of shape {a.shape}")
    if a.dtype != np.int16:
        a = to_int16_hu(np.nan_to_num(a, nan=AIR_HU))
    return np.asfortranarray(a)


def nifti_bytes(array: np.ndarray, spacing: Sequence[float], origin: Sequence[float] = (0.0, 0.0, 0.0)) -> bytes:
    """An uncompressed single-file NIfTI-1 of ``array`` rounded to int16 HU, axis-aligned RAS+.

    Its length is ``352 + 2 * array.size``, whatever the values (see the module doc). An int16
    Fortran-ordered array (what :func:`ctdiff.data.io.read_volume_int16` gives) is copied once, into
    the result; nothing is converted.
    """
    a = int16_voxels(array)
    # a.T of a Fortran-ordered array is C-contiguous: its buffer is the voxels in NIfTI order (x fastest)
    out = b"".join([nifti_header(a.shape, spacing, origin), memoryview(a.T).cast("B")])
    assert len(out) == NIFTI_HEADER_BYTES + 2 * a.size  # fixed-size transport (module doc)
    return out


@dataclass
class ViewerVolume:
    """One pane's volume: HU array (x, y, z) RAS+, spacing in mm, a label shown above the pane.

    ``origin`` (mm of voxel (0, 0, 0)) is used with ``align="affine"``. ``id`` names the content
    for the browser (a pane reloads only when it changes); by default a hash of the bytes sent.
    """

    array: np.ndarray
    spacing: Sequence[float]
    label: str
    origin: Sequence[float] = (0.0, 0.0, 0.0)
    id: str | None = None
    _payload: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)
    _ids: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_volume(cls, volume: Any, label: str, id: str | None = None) -> ViewerVolume:
        """From a :class:`ctdiff.data.volume.Volume` (its array, spacing and affine origin)."""
        return cls(volume.array, volume.spacing, label, origin=tuple(volume.affine[:3, 3]), id=id)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in np.shape(self.array))  # type: ignore[return-value]

    def payload(self, align: str = "centre") -> bytes:
        """The bytes the browser receives (built once per alignment and kept)."""
        if align not in self._payload:
            if align == "centre":
                origin = [-(n - 1) * s / 2.0 for n, s in zip(self.shape, self.spacing)]
            elif align == "affine":
                origin = list(self.origin)
            else:
                raise ValueError(f"align must be 'centre' or 'affine', got {align!r}")
            self._payload[align] = nifti_bytes(self.array, self.spacing, origin)
        return self._payload[align]

    def content_id(self, align: str = "centre") -> str:
        if self.id:
            return f"{self.id}:{align}"
        if align not in self._ids:
            self._ids[align] = hashlib.blake2b(self.payload(align), digest_size=12).hexdigest()
        return self._ids[align]


def viewer_args(
    volumes: Sequence[ViewerVolume],
    *,
    layout: str = "side by side",
    linked: bool = True,
    window: tuple[float, float] = WINDOW_PRESETS["soft tissue"],
    plane: str = "axial",
    height: int = 520,
    align: Literal["centre", "affine"] = "centre",
    presets: Mapping[str, tuple[float, float]] | None = None,
    return_clicks: bool = False,
    forward_keys: bool = True,
    transport: Literal["bytes", "http"] = "bytes",
    key: str | None = None,
) -> dict[str, Any]:
    """The component's arguments, checked (separate from the call so tests can read them).

    With ``transport="http"`` each volume's bytes go to Streamlit's media file manager (a Streamlit
    runtime is needed) and ``volumes[i]["url"]`` names them; with ``"bytes"`` they are ``volume_<i>``.
    """
    if not volumes:
        raise ValueError("ct_viewer needs at least one volume")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    width, level = (float(v) for v in window)
    if not (width > 0 and np.isfinite(width) and np.isfinite(level)):
        raise ValueError(f"window width must be > 0 and both values finite, got W {width} L {level}")
    args: dict[str, Any] = {
        "volumes": [
            {
                "id": v.content_id(align),
                "label": v.label,
                "shape": list(v.shape),
                "spacing": [float(s) for s in v.spacing],
                "bytes": NIFTI_HEADER_BYTES + 2 * int(np.prod(v.shape)),
            }
            for v in volumes
        ],
        "layout": layout,
        "linked": bool(linked),
        "window": [width, level],
        "plane": plane,
        "height": int(height),
        "presets": {k: [float(w), float(lev)] for k, (w, lev) in (presets or WINDOW_PRESETS).items()},
        "return_clicks": bool(return_clicks),
        "forward_keys": bool(forward_keys),
    }
    if transport not in ("bytes", "http"):
        raise ValueError(f"transport must be 'bytes' or 'http', got {transport!r}")
    for i, v in enumerate(volumes):
        if transport == "http":
            from streamlit import runtime

            # Stored once per content. The coordinates tie the file to this element, so Streamlit
            # frees it when the element goes away. The file name is our hash of all the bytes: the
            # manager's own id hashes only the length and 64 KiB at the start, middle and end of files
            # over 1 MiB, so two scans of one shape that differ elsewhere would get one URL.
            args["volumes"][i]["url"] = runtime.get_instance().media_file_mgr.add(
                v.payload(align),
                "application/octet-stream",
                f"ct_viewer.{key or 'default'}.{i}",
                file_name=f"{args['volumes'][i]['id']}.nii",
            )
        else:
            args[f"volume_{i}"] = v.payload(align)
    return args


def ct_viewer(
    volumes: Sequence[ViewerVolume],
    *,
    layout: str = "side by side",
    linked: bool = True,
    window: tuple[float, float] = WINDOW_PRESETS["soft tissue"],
    plane: str = "axial",
    height: int = 520,
    align: Literal["centre", "affine"] = "centre",
    presets: Mapping[str, tuple[float, float]] | None = None,
    return_clicks: bool = False,
    forward_keys: bool = True,
    transport: Literal["auto", "bytes", "http"] = "auto",
    key: str | None = None,
) -> dict | None:
    """Show ``volumes`` in linked panes (see the module doc); returns the last click or None.

    ``window`` and ``plane`` set the view when they change between reruns; in between, the user's
    own changes in the browser stand. ``height`` is the image height in pixels.
    """
    if transport == "auto":
        from streamlit import runtime

        # CTDIFF_VIEWER_TRANSPORT=bytes forces the websocket (AppTest reads the bytes from the element)
        transport = os.environ.get("CTDIFF_VIEWER_TRANSPORT") or ("http" if runtime.exists() else "bytes")
    args = viewer_args(
        volumes,
        layout=layout,
        linked=linked,
        window=window,
        plane=plane,
        height=height,
        align=align,
        presets=presets,
        return_clicks=return_clicks,
        forward_keys=forward_keys,
        transport=transport,
        key=key,
    )
    return _component_func()(**args, key=key, default=None)


def warm_up_viewer(key: str = "ct_viewer_warmup") -> None:
    """Start the viewer once, invisibly, on a page shown before it (Home does).

    The browser then has the viewer's code compiled, WebGL started (on a software GPU, SwiftShader)
    and NiiVue's shaders compiled when the slice browser opens: an 8x8x8 air volume sent as bytes,
    one axial slice drawn, in a frame of height 0 (``frontend/src/viewer.js``, ``warmUp``).
    """
    v = ViewerVolume(np.full((8, 8, 8), AIR_HU, dtype=np.int16), (1.0, 1.0, 1.0), "warm-up", id="warm-up")
    args = viewer_args([v], transport="bytes", key=key)
    _component_func()(**args, warmup=True, key=key, default=None)
