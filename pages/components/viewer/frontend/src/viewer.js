// ctdiff CT viewer: a Streamlit component (components v1) holding one NiiVue instance per pane.
//
// Why our own component and not the `niivue-streamlit` package (0.3.0, checked 2026-11-30): it shows
// one volume per component (one iframe per viewer), so two panes cannot share a slice position,
// zoom, pan or window; it has no CT window presets, no A/B toggle and no key scrolling in our
// convention. Here all panes live in one iframe and are synced in the browser, without reruns.
//
// Protocol with Streamlit is written by hand (postMessage, as streamlit-component-lib does) so the
// bundle does not carry React and Apache Arrow. Volumes arrive once as bytes (uncompressed NIfTI-1,
// int16 HU); every later render with the same volume ids only updates the controls.
//
// First display (benchmarks/bench_app.py): both volumes are fetched at once (as byte ranges: never
// gzipped by the server); each pane shows a preview of its slice as soon as its bytes are in; NiiVue
// parses each volume as soon as it arrives, then takes one pane after the other. An axial pane gets
// no 3D texture until another plane is asked for (slice2D); otherwise NiiVue builds it once, in our
// window (not once for NiiVue's automatic range and again for ours), without the volume-rendering
// gradient we never use (build.mjs).
import { Niivue, NVImage, NVImageFromUrlOptions, DRAG_MODE, SLICE_TYPE, SHOW_RENDER } from "@niivue/niivue";

const PLANES = { axial: SLICE_TYPE.AXIAL, coronal: SLICE_TYPE.CORONAL, sagittal: SLICE_TYPE.SAGITTAL, multiplanar: SLICE_TYPE.MULTIPLANAR };
const PLANE_NAMES = ["axial", "coronal", "sagittal"];
// voxel axis each plane's slices run along (RAS volumes): axial z, coronal y, sagittal x
const STEP = { 0: [0, 0, 1], 1: [0, 1, 0], 2: [1, 0, 0] };

// ------------------------------------------------------------------ Streamlit protocol
function send(type, data) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");
}
const setValue = (value) => send("streamlit:setComponentValue", { value, dataType: "json" });
let lastHeight = -1;
function setHeight() {
  const h = Math.ceil(document.body.scrollHeight);
  if (h !== lastHeight) {
    lastHeight = h;
    send("streamlit:setFrameHeight", { height: h });
  }
}

// ------------------------------------------------------------------ state
const S = {
  panes: [], // {id, label, sub, nv, canvas, wrap, status, hover, n: dims}
  ids: "",
  plane: "axial",
  linked: true,
  layout: "side by side",
  shown: 0,
  wl: [400, 40],
  presets: {},
  active: 0, // pane that keys act on
  activePlane: 0, // in the multiplanar layout: the tile last under the mouse
  args: {},
  clicks: 0,
  returnClicks: false,
  forwardKeys: true,
  height: 520,
  // timing hooks for tests and benchmarks (ctdiff/benchmarks/bench_app.py)
  lastStep: null,
  timings: {}, // per pane: start, fetched, attached, loaded, drawn (performance.now() ms)
  renderAt: null, // performance.now() when the first render message with volumes arrived
};
window.ctViewer = S;

const $ = (sel) => document.querySelector(sel);
const root = document.getElementById("root");

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// ------------------------------------------------------------------ toolbar
function buildToolbar() {
  const bar = el("div", { class: "toolbar", id: "toolbar" });
  const planes = el("span", { class: "group" });
  for (const [name, label] of [["axial", "Axial"], ["coronal", "Coronal"], ["sagittal", "Sagittal"], ["multiplanar", "3 planes"]]) {
    planes.append(el("button", { "data-plane": name, title: `${name} view`, on: { click: () => setPlane(name) } }, label));
  }
  const presets = el("span", { class: "group", id: "presets" });
  const custom = el("span", { class: "group" },
    el("label", {}, "W ", el("input", { id: "win-w", type: "number", min: "1", step: "10", title: "window width (HU)" })),
    el("label", {}, " L ", el("input", { id: "win-l", type: "number", step: "10", title: "window level (HU)" })),
    el("button", { title: "apply the typed window", on: { click: applyCustomWindow } }, "Set"),
  );
  const link = el("label", { class: "group", title: "slice position (mm), zoom, pan and window shared by every pane" },
    el("input", { id: "linked", type: "checkbox", on: { change: (e) => { S.linked = e.target.checked; if (S.linked) syncFrom(S.active); } } }), " linked");
  const ab = el("button", { id: "ab", title: "A/B toggle (key T)", on: { click: toggleAB } }, "A/B");
  const reset = el("button", { title: "reset zoom and pan (key 0)", on: { click: resetView } }, "Reset zoom");
  bar.append(planes, presets, custom, link, ab, reset);
  return bar;
}

function refreshToolbar() {
  for (const b of document.querySelectorAll("[data-plane]")) b.classList.toggle("on", b.dataset.plane === S.plane);
  const presets = $("#presets");
  presets.replaceChildren(...Object.entries(S.presets).map(([name, [w, l]]) =>
    el("button", { "data-preset": name, title: `W ${w} / L ${l}`, on: { click: () => setWindow(w, l) } }, name)));
  for (const b of presets.children) {
    const [w, l] = S.presets[b.dataset.preset];
    b.classList.toggle("on", w === S.wl[0] && l === S.wl[1]);
  }
  $("#win-w").value = round(S.wl[0]);
  $("#win-l").value = round(S.wl[1]);
  $("#linked").checked = S.linked;
  const ab = $("#ab");
  ab.style.display = S.layout === "A/B" && S.panes.length > 1 ? "" : "none";
  if (S.panes[S.shown]) ab.textContent = `A/B: showing ${"AB"[S.shown] || S.shown + 1} · ${S.panes[S.shown].label}`;
}

const round = (v) => Math.round(v * 10) / 10;

// ------------------------------------------------------------------ panes
function newPane(index, meta) {
  const canvas = el("canvas", { id: `pane-${index}`, tabindex: "0" });
  const status = el("div", { class: "status" });
  const title = el("div", { class: "title" }, meta.label);
  const wrap = el("div", { class: "pane", "data-index": String(index) }, title, el("div", { class: "canvas-box" }, canvas), status);
  const nv = new Niivue({
    backColor: [0, 0, 0, 1],
    crosshairColor: [1.0, 0.85, 0.1, 0.9],
    isRadiologicalConvention: true, // patient right on the image left, as DICOM viewers
    isOrientationTextVisible: true,
    showAllOrientationMarkers: true,
    isNearestInterpolation: true, // a viewer must not invent intermediate HU
    multiplanarShowRender: SHOW_RENDER.NEVER,
    multiplanarForceRender: false,
    dragAndDropEnabled: false,
    isColorbar: false,
    loadingText: "loading",
    textHeight: 0.05,
    show3Dcrosshair: false,
    logLevel: "error",
    mouseEventConfig: {
      leftButton: { primary: DRAG_MODE.crosshair, withShift: DRAG_MODE.pan, withCtrl: DRAG_MODE.pan },
      rightButton: DRAG_MODE.windowing,
      centerButton: DRAG_MODE.pan,
    },
  });
  // our build of NiiVue skips the 3D gradient texture when this is set (see build.mjs): slices only
  nv.skipGradient = true;
  // NiiVue's per-slice 2D path (slice2D below) makes a new 2D texture on every slice or window change
  // with linear filtering and never deletes the last one (it is not kept as its volume texture): here
  // each replaces the one before, and it is sampled nearest like the 3D texture
  const makeTex2D = nv.rgbaTex2D.bind(nv);
  nv.rgbaTex2D = (texID, activeID, ...rest) => {
    if (activeID !== nv.gl.TEXTURE0) return makeTex2D(texID, activeID, ...rest);
    // NiiVue passes its volumeTexture, which its rgbaTex2D deletes, keeps the new texture only in a
    // local variable, and then binds volumeTexture again to draw: a deleted handle (Chromium: "attempt
    // to use a deleted object"), or a 3D texture on the 2D target ("textures can not be used with
    // multiple targets"); the picture was right only because the failed bind left the new texture
    // bound. Here the new slice texture becomes the volume texture, and the one before is deleted.
    if (texID && texID !== nv.sliceTex2D) nv.gl.deleteTexture(texID);
    const tex = makeTex2D(nv.sliceTex2D ?? null, activeID, ...rest);
    nv.sliceTex2D = nv.volumeTexture = tex;
    nv.gl.texParameteri(nv.gl.TEXTURE_2D, nv.gl.TEXTURE_MIN_FILTER, nv.gl.NEAREST);
    nv.gl.texParameteri(nv.gl.TEXTURE_2D, nv.gl.TEXTURE_MAG_FILTER, nv.gl.NEAREST);
    return tex;
  };
  return { index, id: meta.id, label: meta.label, sub: meta.sub || "", nv, canvas, wrap, status, hover: "", loaded: false, bytes: meta.bytes, shape: meta.shape, spacing: meta.spacing };
}

const STREAMLIT_URL = new URLSearchParams(window.location.search).get("streamlitUrl") || window.location.origin + "/";

const NIFTI_HEADER_BYTES = 352; // our payload: NIfTI-1 header + 4 bytes, then int16 voxels (viewer/__init__.py)
const middleSlice = (nz) => Math.round(0.5 * nz - 0.5); // NiiVue's first crosshair: the middle of the volume

async function fetchVolume(url, expected, range = null) {
  // A media URL of the Streamlit server ("/media/<hash>.bin"), relative to the app's base path.
  // Asked for as a byte range: Streamlit gzips whole media responses (level 9, on every request),
  // which took longer than the transfer itself and made the bytes on the wire depend on the voxels;
  // a range answer (206) is never compressed. A server without range support answers 200 in full
  // (for a part, ``range``, that is an error: the caller falls back to the whole volume).
  const bytes = range ? `bytes=${range[0]}-${range[1]}` : "bytes=0-";
  const response = await fetch(new URL(url.replace(/^\//, ""), STREAMLIT_URL), { headers: { Range: bytes } });
  if (!response.ok || (range && response.status !== 206)) throw new Error(`volume download failed (HTTP ${response.status})`);
  const buf = await response.arrayBuffer();
  if (expected && buf.byteLength !== expected) throw new Error(`volume download incomplete (${buf.byteLength} of ${expected} bytes)`);
  return buf;
}

function sliceRange(p, url) {
  const [nx, ny, nz] = p.shape || [0, 0, 0];
  if (!url || S.plane !== "axial" || !(nx > 0 && ny > 0 && nz > 0)) return null;
  const z = middleSlice(nz), size = 2 * nx * ny;
  return { z, size, start: NIFTI_HEADER_BYTES + size * z };
}

// The opening slice of each pane (its byte range), asked for before any whole volume: with two 70 MB
// responses in flight a 512 KiB one took 0.5 s instead of a few ms (benchmarks/bench_app.py);
// resolves when every pane's slice is in (or failed: then the preview waits for the whole volume).
function fetchSlices(panes, metas) {
  return Promise.allSettled(panes.map((p, i) => {
    const t = (S.timings[p.index] = { start: performance.now() });
    const r = sliceRange(p, metas[i].url);
    if (!r) return Promise.resolve();
    return fetchVolume(metas[i].url, r.size, [r.start, r.start + r.size - 1]).then((buf) => {
      t.slice = performance.now();
      p.slice = { vox: new Int16Array(buf), z: r.z };
    });
  }));
}

// A preview of the pane's opening slice, as soon as that slice is in: with a URL the slice came
// first as its own byte range (fetchSlices: 512 KiB of a 70 MB 512x512x133 volume; its size depends
// only on the shape, like the volume's), so the picture does not wait for the whole volume; without
// one (or if that range failed) it is drawn from the whole volume once that is in (drawPreview).
// Resolves when the frame holding it has been committed to the screen (two animation frames).
async function showPreview(p, draw, source) {
  let shown = false;
  try {
    shown = draw();
  } catch (err) { /* no preview: NiiVue draws the pane when it is ready */ }
  if (!shown) return false;
  p.painted = true;
  S.timings[p.index].previewFrom = source; // "slice" or "volume" (tests)
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const t = S.timings[p.index];
  t.preview = t.preview ?? performance.now();
  return true;
}
const slicePreview = (p) => {
  if (!p.slice) return Promise.resolve(false);
  const { vox, z } = p.slice;
  p.slice = null;
  return showPreview(p, () => paintPreview(p, vox, ...p.shape, p.spacing[0], p.spacing[1], z), "slice");
};

// The volume's bytes: fetched (url) or copied out of the message's buffer (NiiVue keeps the ArrayBuffer).
function download(p, bytes, url) {
  const t = S.timings[p.index];
  const got = url ? fetchVolume(url, p.bytes) : Promise.resolve(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return got.then(async (buf) => {
    t.fetched = performance.now();
    if (!p.painted) await showPreview(p, () => drawPreview(p, buf), "volume");
    return buf;
  });
}

async function loadPane(p, got, before) {
  const t = S.timings[p.index];
  await p.previewed;
  await p.nv.attachToCanvas(p.canvas);
  t.attached = performance.now();
  p.nv.opts.crosshairWidth = S.plane === "multiplanar" ? 1 : 0;
  p.nv.setSliceType(PLANES[S.plane]);
  const buf = await got;
  // as Niivue.addVolumeFromUrl with the bytes, plus the window: NiiVue builds the texture once, in our
  // window. The parse (header, RAS, NiiVue's robust range: JavaScript, 0.2-0.7 s for 512x512x133)
  // runs as soon as the bytes are in, so it overlaps an earlier pane's texture build
  const name = `${p.id}.nii`;
  const options = NVImageFromUrlOptions(name);
  Object.assign(options, { buffer: buf, name, cal_min: S.wl[1] - S.wl[0] / 2, cal_max: S.wl[1] + S.wl[0] / 2 });
  const volume = await NVImage.loadFromUrl(options);
  t.parsed = performance.now();
  // NiiVue's texture build holds the page until the GPU has the volume (on SwiftShader the page's main
  // thread measured blocked for the whole build, so a preview cannot scroll meanwhile): every pane's
  // download (and preview) first, so a slow texture does not delay another pane's picture; then one
  // pane after the other, so the first becomes interactive as early as it can
  await before;
  if (S.plane === "axial") slice2D(p, true);
  p.nv.addVolume(volume);
  t.loaded = performance.now();
  p.loaded = true;
  applyWindow(p); // the window may have changed while the volume travelled (no texture rebuild otherwise)
  attachEvents(p);
  if (S.linked) syncTo(p);
  p.nv.drawScene();
  updateStatus(p);
  t.queued = performance.now();
  await gpuDone(p.nv.gl); // WebGL work is asynchronous: "drawn" is when the GPU (or SwiftShader) finished it
  t.drawn = performance.now();
  p.preview?.remove();
  p.preview = null;
}

// The middle axial slice, windowed, drawn from the bytes on a 2D canvas over the pane while NiiVue
// builds its texture (seconds on a software GPU). Same geometry as NiiVue's first view: radiological
// convention (patient right on the image left), anterior up, pixel aspect from the spacing, fitted and
// centred, nearest neighbour (no invented HU). Other planes wait for NiiVue.
function drawPreview(p, buf) {
  if (S.plane !== "axial" || buf.byteLength < 352) return false;
  const h = new DataView(buf);
  const [nx, ny, nz] = [42, 44, 46].map((o) => h.getInt16(o, true));
  const [sx, sy] = [80, 84].map((o) => h.getFloat32(o, true));
  const offset = h.getFloat32(108, true);
  if (h.getInt16(70, true) !== 4 || !(nx > 0 && ny > 0 && nz > 0 && sx > 0 && sy > 0)) return false; // int16 only
  const z = middleSlice(nz);
  return paintPreview(p, new Int16Array(buf, offset + 2 * nx * ny * z, nx * ny), nx, ny, nz, sx, sy, z);
}

// one axial slice ``vox`` (x fastest) of a (nx, ny, nz) volume of spacing (sx, sy), slice index z
function paintPreview(p, vox, nx, ny, nz, sx, sy, z) {
  if (S.plane !== "axial" || p.loaded || !(sx > 0 && sy > 0) || vox.length !== nx * ny) return false;
  const img = new ImageData(nx, ny);
  const lo = S.wl[1] - S.wl[0] / 2, scale = 255 / S.wl[0];
  for (let y = 0; y < ny; y++) {
    const row = (ny - 1 - y) * nx;
    for (let x = 0; x < nx; x++) {
      const g = Math.min(255, Math.max(0, (vox[y * nx + x] - lo) * scale));
      const i = 4 * (row + nx - 1 - x);
      img.data[i] = img.data[i + 1] = img.data[i + 2] = g;
      img.data[i + 3] = 255;
    }
  }
  const box = p.canvas.parentElement;
  const fit = Math.min(box.clientWidth / (nx * sx), box.clientHeight / (ny * sy));
  const c = el("canvas", {
    class: "preview", width: String(nx), height: String(ny), title: "preview: the viewer is loading",
    style: `position:absolute;left:50%;top:50%;transform:translate(-50%,-50%);width:${nx * sx * fit}px;height:${ny * sy * fit}px;image-rendering:pixelated;pointer-events:none`,
  });
  c.getContext("2d").putImageData(img, 0, 0);
  p.preview?.remove();
  p.preview = p.previewCanvas = c; // previewCanvas stays for tests (tests/app/test_viewer_browser.py)
  box.append(c);
  p.status.innerHTML = `<span>axial ${z + 1}/${nz} · W ${round(S.wl[0])} L ${round(S.wl[1])} · preview, loading the viewer…</span>`;
  return true;
}

// resolves when every WebGL command issued so far has run; polls a fence without blocking the page
function gpuDone(gl) {
  const sync = gl.fenceSync(gl.SYNC_GPU_COMMANDS_COMPLETE, 0);
  gl.flush();
  return new Promise((resolve) => {
    const poll = () => {
      if (!sync || gl.isContextLost() || gl.getSyncParameter(sync, gl.SYNC_STATUS) === gl.SIGNALED) {
        if (sync) gl.deleteSync(sync);
        resolve();
      } else setTimeout(poll, 4);
    };
    setTimeout(poll, 0);
  });
}

function attachEvents(p) {
  const c = p.canvas;
  // zoom with ctrl/cmd + wheel (captured before NiiVue's own wheel handler, which scrolls slices)
  c.parentElement.addEventListener("wheel", (e) => {
    if (!(e.ctrlKey || e.metaKey)) return;
    e.preventDefault();
    e.stopPropagation();
    zoom(p, e.deltaY < 0 ? 1.1 : 1 / 1.1);
  }, { capture: true, passive: false });
  // NiiVue's listeners were registered first, so these run after it changed the scene
  c.addEventListener("wheel", () => { S.active = p.index; afterChange(p); }, { passive: true });
  // A click is a press and release within 4 px on the screen, and it marks the voxel under the press.
  // Not the window's coordinates: pressing in a viewer whose iframe is partly out of view focuses the
  // iframe, and the page scrolls it into view before the release, so in the window the release lands
  // up to a hundred px away from the press (a reader's mark was lost as a "drag"; CI, 2026-12-03).
  let down = null;
  c.addEventListener("mousedown", (e) => {
    down = [e.screenX, e.screenY, e.button, voxelAt(p, e)];
    S.active = p.index;
  });
  c.addEventListener("mousemove", (e) => {
    S.active = p.index;
    hoverReadout(p, e);
    if (e.buttons) afterChange(p);
  });
  c.addEventListener("mouseleave", () => { p.hover = ""; updateStatus(p); });
  c.addEventListener("mouseup", (e) => {
    afterChange(p);
    if (down && down[2] === 0 && Math.hypot(e.screenX - down[0], e.screenY - down[1]) < 4) click(p, down[3]);
    down = null;
  });
  c.addEventListener("contextmenu", (e) => e.preventDefault());
  p.nv.onIntensityChange = () => {
    const v = p.nv.volumes[0];
    S.wl = [v.cal_max - v.cal_min, (v.cal_max + v.cal_min) / 2];
    refreshToolbar();
    afterChange(p);
  };
}

function canvasXY(p, e) {
  const r = p.canvas.getBoundingClientRect();
  const dpr = p.nv.uiData.dpr || window.devicePixelRatio || 1;
  return [(e.clientX - r.left) * dpr, (e.clientY - r.top) * dpr];
}

function voxelAt(p, e) {
  const xy = canvasXY(p, e);
  const frac = p.nv.canvasPos2frac(xy);
  if (!frac || frac[0] < 0) return null;
  const tile = p.nv.tileIndex(xy[0], xy[1]);
  if (tile >= 0 && p.nv.screenSlices[tile]) S.activePlane = p.nv.screenSlices[tile].axCorSag;
  const vox = p.nv.frac2vox(frac);
  const dims = p.nv.volumes[0].dimsRAS;
  for (let a = 0; a < 3; a++) if (vox[a] < 0 || vox[a] >= dims[a + 1]) return null;
  const mm = p.nv.frac2mm(frac);
  return { vox: [vox[0], vox[1], vox[2]], mm: [mm[0], mm[1], mm[2]], hu: p.nv.volumes[0].getValue(vox[0], vox[1], vox[2]) };
}

function hoverReadout(p, e) {
  const v = voxelAt(p, e);
  p.hover = v ? `voxel (${v.vox.join(", ")}) = <b>${round(v.hu)} HU</b>` : "";
  updateStatus(p);
}

function click(p, v) {
  if (!v || !S.returnClicks) return;
  S.clicks += 1;
  setValue({ event: "click", pane: p.index, label: p.label, id: p.id, voxel: v.vox, mm: v.mm.map(round), hu: v.hu, n: S.clicks });
}

function sliceInfo(p) {
  const nv = p.nv;
  if (!p.loaded) return "";
  const vox = nv.frac2vox(nv.scene.crosshairPos);
  const dims = nv.volumes[0].dimsRAS;
  if (S.plane === "multiplanar") return `voxel (${vox.join(", ")}) of ${dims[1]}×${dims[2]}×${dims[3]}`;
  const axis = { axial: 2, coronal: 1, sagittal: 0 }[S.plane];
  return `${S.plane} ${vox[axis] + 1}/${dims[axis + 1]}`;
}

function updateStatus(p) {
  const v = p.loaded ? p.nv.volumes[0] : null;
  const wl = v ? `W ${round(v.cal_max - v.cal_min)} L ${round((v.cal_max + v.cal_min) / 2)}` : "";
  const zoomText = p.loaded ? ` · zoom ${round(p.nv.scene.pan2Dxyzmm[3])}×` : "";
  p.status.innerHTML = `<span>${sliceInfo(p)} · ${wl}${zoomText}</span><span class="hover">${p.hover}</span>`;
}

// ------------------------------------------------------------------ actions
function afterChange(src) {
  if (S.linked) syncFrom(src.index);
  for (const p of S.panes) updateStatus(p);
}

function syncFrom(i) {
  const src = S.panes[i];
  if (!src || !src.loaded) return;
  const mm = src.nv.frac2mm(src.nv.scene.crosshairPos);
  for (const p of S.panes) {
    if (p === src || !p.loaded) continue;
    const moved = setCrosshair(p, p.nv.mm2frac(mm));
    p.nv.scene.pan2Dxyzmm = [...src.nv.scene.pan2Dxyzmm];
    const vs = src.nv.volumes[0], vo = p.nv.volumes[0];
    if (vo.cal_min !== vs.cal_min || vo.cal_max !== vs.cal_max || (moved && p.slice2D)) {
      vo.cal_min = vs.cal_min;
      vo.cal_max = vs.cal_max;
      p.nv.updateGLVolume();
    } else if (isVisible(p)) {
      p.nv.drawScene();
    }
  }
}

// a pane that has just loaded joins the others: position in mm and zoom/pan of the first pane shown
function syncTo(p) {
  const src = S.panes.find((q) => q !== p && q.loaded);
  if (!src) return;
  if (setCrosshair(p, p.nv.mm2frac(src.nv.frac2mm(src.nv.scene.crosshairPos))) && p.slice2D) p.nv.updateGLVolume();
  p.nv.scene.pan2Dxyzmm = [...src.nv.scene.pan2Dxyzmm];
}

// sets a pane's crosshair (fractions, clamped); true when its axial slice changed
function setCrosshair(p, frac) {
  const z0 = p.nv.frac2vox(p.nv.scene.crosshairPos)[2];
  p.nv.scene.crosshairPos = [0, 1, 2].map((a) => Math.min(Math.max(frac[a], 0), 1));
  return p.nv.frac2vox(p.nv.scene.crosshairPos)[2] !== z0;
}

// Axial first. NiiVue's 3D texture of a 512x512x133 volume (one shader pass over every voxel) took
// 1.5-1.7 s per pane on Chromium's software WebGL, with the page's main thread blocked meanwhile, and
// panes are built one after the other: 6.2-6.6 s to a drawn pair on an idle 2-core machine
// (docs/benchmarks.md). NiiVue has a second path, meant for volumes larger than the GPU's 3D texture
// limit: it colours only the current axial slice in JavaScript into a 2D texture and redraws it when
// the slice or the window changes (its moveCrosshairInVox and updateGLVolume do this). An axial view
// needs nothing more, so a pane opened in the axial plane takes that path (by lowering the limit NiiVue
// compares with), and the 3D texture is built when another plane is first asked for (setPlane).
function slice2D(p, on) {
  if (on) {
    p.max3D = p.max3D ?? p.nv.uiData.max3D;
    p.nv.uiData.max3D = 1;
    p.slice2D = true;
  } else if (p.slice2D) {
    p.nv.uiData.max3D = p.max3D;
    p.slice2D = false;
    p.nv.updateGLVolume();
    if (p.nv.sliceTex2D) p.nv.gl.deleteTexture(p.nv.sliceTex2D);
    p.nv.sliceTex2D = null;
  }
}

const isVisible = (p) => p.wrap.style.display !== "none";

function step(delta) {
  const p = S.panes[S.active] && isVisible(S.panes[S.active]) ? S.panes[S.active] : S.panes.find(isVisible);
  if (!p || !p.loaded) return;
  const plane = S.plane === "multiplanar" ? S.activePlane : PLANES[S.plane];
  const [x, y, z] = STEP[plane].map((v) => v * delta);
  p.nv.moveCrosshairInVox(x, y, z);
  afterChange(p);
}

function zoom(p, factor) {
  const s = p.nv.scene.pan2Dxyzmm;
  s[3] = Math.min(Math.max(s[3] * factor, 0.25), 16);
  p.nv.drawScene();
  afterChange(p);
}

function resetView() {
  for (const p of S.panes) if (p.loaded) { p.nv.scene.pan2Dxyzmm = [0, 0, 0, 1]; p.nv.drawScene(); updateStatus(p); }
}

function applyWindow(p) {
  const v = p.nv.volumes[0];
  if (!v) return;
  const lo = S.wl[1] - S.wl[0] / 2, hi = S.wl[1] + S.wl[0] / 2;
  if (v.cal_min !== lo || v.cal_max !== hi) {
    // a window change rebuilds the volume's texture in NiiVue: only when it really changed
    v.cal_min = lo;
    v.cal_max = hi;
    p.nv.updateGLVolume();
  }
  updateStatus(p);
}

function setWindow(w, l) {
  if (!(w > 0) || !Number.isFinite(l)) return;
  S.wl = [w, l];
  for (const p of S.panes) if (p.loaded) applyWindow(p);
  refreshToolbar();
}

function applyCustomWindow() {
  setWindow(parseFloat($("#win-w").value), parseFloat($("#win-l").value));
}

function setPlane(name) {
  if (!(name in PLANES)) return;
  S.plane = name;
  for (const p of S.panes) {
    if (!p.loaded) continue;
    if (name !== "axial") slice2D(p, false); // the 3D texture, once (seconds on a software GPU)
    p.nv.opts.crosshairWidth = name === "multiplanar" ? 1 : 0;
    p.nv.setSliceType(PLANES[name]);
    updateStatus(p);
  }
  if (name !== "multiplanar") S.activePlane = PLANES[name];
  refreshToolbar();
}

function showPanes() {
  S.panes.forEach((p, i) => {
    const show = S.layout !== "A/B" || i === S.shown;
    p.wrap.style.display = show ? "" : "none";
    p.wrap.style.flexBasis = S.layout === "A/B" ? "100%" : `${100 / S.panes.length}%`;
  });
  for (const p of S.panes) if (p.loaded && isVisible(p)) { p.nv.resizeListener(); p.nv.drawScene(); }
  refreshToolbar();
  setHeight();
}

function toggleAB() {
  if (S.panes.length < 2) return;
  const from = S.shown;
  S.shown = (S.shown + 1) % S.panes.length;
  S.active = S.shown;
  if (!S.linked) {
    // A/B compares the same place: the shown pane takes the position, zoom and window of the other
    S.linked = true;
    syncFrom(from);
    S.linked = false;
  }
  showPanes();
}

// ------------------------------------------------------------------ keys
function onKey(e) {
  if (e.target && e.target.tagName === "INPUT") return;
  const n = S.panes[0]?.loaded ? 10 : 1;
  const actions = {
    ArrowUp: () => step(1), ArrowRight: () => step(1), ArrowDown: () => step(-1), ArrowLeft: () => step(-1),
    PageUp: () => step(n), PageDown: () => step(-n),
    Home: () => step(-100000), End: () => step(100000),
    "+": () => S.panes.forEach((p) => p.loaded && zoom(p, 1.25)), "=": () => S.panes.forEach((p) => p.loaded && zoom(p, 1.25)),
    "-": () => S.panes.forEach((p) => p.loaded && zoom(p, 0.8)), 0: resetView, t: toggleAB, T: toggleAB,
  };
  const fn = actions[e.key];
  if (fn && !e.ctrlKey && !e.metaKey && !e.altKey) {
    e.preventDefault();
    e.stopPropagation();
    const t0 = e.timeStamp;
    fn();
    const stepInfo = { key: e.key, t0, tDrawn: performance.now() };
    // benchmarks/bench_app.py: a checksum of each shown pane's pixels, read back right after the draw
    if (S.measurePixels) stepInfo.pixels = pixelSums();
    S.lastStep = stepInfo;
    requestAnimationFrame(() => { stepInfo.tFrame = performance.now(); });
    return;
  }
  if (S.forwardKeys) {
    // keys the viewer does not use (e.g. a reader form's shortcuts) go on to the page around it
    try {
      window.parent.document.dispatchEvent(new KeyboardEvent("keydown", { key: e.key, code: e.code, shiftKey: e.shiftKey, bubbles: true }));
    } catch (err) { /* another origin: nothing to forward to */ }
  }
}
function pixelSums() {
  return S.panes.filter(isVisible).map((p) => {
    const gl = p.nv.gl;
    const w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
    const buf = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, buf);
    let sum = 0;
    for (let i = 0; i < buf.length; i += 4) sum = (Math.imul(sum, 31) + buf[i]) >>> 0;
    return sum;
  });
}

// capture: before NiiVue's own canvas key handler (which moves the crosshair in its own convention)
window.addEventListener("keydown", onKey, { capture: true });

// ------------------------------------------------------------------ warm-up
// On a page shown before the viewer (Home, warm_up_viewer in __init__.py): NiiVue starts once, in an
// invisible frame, on a tiny volume and draws one axial slice, so that the browser has the viewer's
// code compiled, its WebGL (on a software GPU: SwiftShader) started and NiiVue's shaders compiled when
// the slice browser opens. A first visit of the slice browser spent ~0.5 s more after the volume URLs
// than a later one (benchmarks/bench_app.py), with the server's side the same for both.
async function warmUp(args) {
  send("streamlit:setFrameHeight", { height: 0 });
  const p = newPane(0, args.volumes[0]);
  p.wrap.style.cssText = "position:fixed;left:0;top:0;width:64px;height:64px;opacity:0;pointer-events:none";
  document.body.append(p.wrap);
  await p.nv.attachToCanvas(p.canvas);
  const b = args.volume_0;
  const options = NVImageFromUrlOptions("warm-up.nii");
  Object.assign(options, { buffer: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength), name: "warm-up.nii", cal_min: -160, cal_max: 240 });
  const volume = await NVImage.loadFromUrl(options);
  slice2D(p, true);
  p.nv.addVolume(volume);
  p.nv.drawScene();
  await gpuDone(p.nv.gl);
  p.nv.gl.getExtension("WEBGL_lose_context")?.loseContext();
  p.wrap.remove();
  S.warmedUp = true; // tests
}

// ------------------------------------------------------------------ render
async function render(args) {
  if (args.warmup) {
    if (!S.warmingUp) S.warmingUp = warmUp(args);
    return;
  }
  const metas = args.volumes || [];
  const ids = metas.map((m) => m.id).join("|");
  const prev = S.args;
  S.args = args;
  S.presets = args.presets || {};
  S.returnClicks = !!args.return_clicks;
  S.forwardKeys = args.forward_keys !== false;
  S.height = args.height || 520;
  document.documentElement.style.setProperty("--pane-height", `${S.height}px`);
  if (args.layout !== prev.layout) { S.layout = args.layout; S.shown = 0; }
  if (args.linked !== prev.linked) S.linked = !!args.linked;
  const wlChanged = JSON.stringify(args.window) !== JSON.stringify(prev.window);
  if (wlChanged && args.window) S.wl = [Number(args.window[0]), Number(args.window[1])];
  const planeChanged = args.plane !== prev.plane;
  if (planeChanged && args.plane) S.plane = args.plane;

  if (!$("#toolbar")) root.append(buildToolbar(), el("div", { class: "panes", id: "panes" }));
  if (ids !== S.ids) {
    S.ids = ids;
    const old = S.panes;
    S.panes = metas.map((m, i) => newPane(i, m));
    $("#panes").replaceChildren(...S.panes.map((p) => p.wrap));
    for (const p of old) p.nv.gl?.getExtension("WEBGL_lose_context")?.loseContext();
    showPanes();
    const t0 = performance.now();
    S.renderAt = S.renderAt ?? t0;
    // first every pane's opening slice, painted; then the whole volumes, all asked for at once; NiiVue's
    // WebGL set-up (shader compiles hold the page) waits until the previews are on screen (loadPane)
    await fetchSlices(S.panes, metas);
    for (const p of S.panes) p.previewed = slicePreview(p); // paints now, resolves once on screen
    const got = S.panes.map((p, i) => download(p, args[`volume_${i}`], metas[i].url));
    const allIn = Promise.allSettled(got);
    allIn.then(() => { S.previewMs = performance.now() - t0; });
    let before = allIn;
    const loads = S.panes.map((p, i) => {
      const done = loadPane(p, got[i], before);
      before = done.catch(() => {});
      return done;
    });
    await Promise.all(loads);
    S.firstDisplayMs = performance.now() - t0;
    S.ready = true;
  } else {
    if (wlChanged) for (const p of S.panes) if (p.loaded) applyWindow(p);
    if (planeChanged) setPlane(S.plane);
  }
  showPanes();
  for (const p of S.panes) updateStatus(p);
}

window.addEventListener("message", (ev) => {
  if (ev.data && ev.data.type === "streamlit:render") render(ev.data.args).catch((err) => {
    root.append(el("div", { class: "error" }, `The viewer could not show these volumes: ${err}`));
    setHeight();
  });
});
new ResizeObserver(setHeight).observe(document.body);
send("streamlit:componentReady", { apiVersion: 1 });
