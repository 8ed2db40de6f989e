"""Benchmark: the slice browser's viewer in a real browser (targets: step median <= 50 ms, p95 <= 100 ms; first display <= 3 s).

``streamlit run app.py`` on a temporary workspace, opened by Playwright in Debian's chromium
(``/usr/bin/chromium``, headless, software WebGL), slice browser with its default NiiVue viewer
(``pages/components/viewer``), two linked panes. Pairs (``--pairs``):

- ``realct``: the 512x512x133 real chest/abdomen CT (``ctdiff.data.realct``, from the real-CT cache
  ``$CTDIFF_REAL_CT_CACHE``, no network) as the real pane, and the same scan + 30 HU white noise as the
  generated pane;
- ``phantom``: a 512x512x133 phantom pair (``ctdiff.data.phantom``), when the real CT is not at hand;
- ``demo``: a generated volume shipped with the demo (``ctdiff_app/demo/assets/samples``) and a
  phantom of the same shape, as the demo workspace holds.

Measured:

- **slice step**: time from the key press (the keydown event's timestamp in the page) to the next
  animation frame after both panes were redrawn (the frame that shows the new pixels). A separate
  pass reads the panes' pixels back after every step and checks that both changed (so each timed
  step really changed the picture; the read-back is not in the timed pass). Arrow keys alternate
  runs up and down through the stack.
- **first display**: from ``page.goto`` of the slice browser until both panes have their volume
  drawn (the viewer reads one pixel back, so queued WebGL work is finished). The server is warmed
  first on the Home page (Python imports), then: the first visit is **cold** (the server reads both
  files), later visits with a fresh page are **warm** (the server has the bytes; the browser fetches
  and draws again). Stage times from the page: iframe created, volume URLs arrived, per pane fetched,
  parsed by NiiVue, drawn.
- **server read + prepare**, one fresh Python process per app version: the slice browser's loader of
  the viewer bytes, cold, per file.
- **HTTP transfer** of each volume from the running server, as the old viewer asked for it (whole
  response; Chromium always sends ``Accept-Encoding: gzip``) and as the new one does (``Range``).
- ``--baseline DIR``: the same first-display and server measurements for another checkout of the app
  (e.g. the commit before the first-display work: ``git archive <commit> | tar -x -C DIR``), in the
  same run, for a side-by-side ratio.
- ``--server``: the old server-rendered viewer (AppTest rerun per slider move) for comparison.

    .venv/bin/python benchmarks/bench_app.py [--pairs demo realct] [--baseline DIR] [--server]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctdiff.data.io import read_volume, write_nifti  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
BIG = (512, 512, 133)
STEP_MEDIAN_MS, STEP_P95_MS, FIRST_DISPLAY_S = 50.0, 100.0, 3.0
RESULTS = REPO / "benchmarks" / "results" / "app-viewer.json"


# ------------------------------------------------------------------------------------- data
def realct_pair(ws: Path) -> str:
    from ctdiff.data.realct import cache_dir, fetch

    chest = fetch(network=False)["cxr.nii.gz"]  # InputError when the real-CT cache lacks it
    (ws / "real").mkdir(parents=True)
    shutil.copy(chest, ws / "real" / "chest_abdomen.nii.gz")
    real = read_volume(chest)
    noise = np.random.default_rng(2).normal(0.0, 30.0, real.shape).astype(np.float32)
    write_nifti(real.with_array(real.array + noise), ws / "generated" / "chest_noisy.nii.gz")
    return (
        f"real chest/abdomen CT {'x'.join(map(str, real.shape))} int16 (LAS on disk, intercept -1024; "
        f"from the real-CT cache {cache_dir()}) and the same scan + 30 HU white noise written by ctdiff"
    )


def phantom_pair(ws: Path) -> str:
    from ctdiff.data.phantom import make_phantom

    real, _ = make_phantom(shape=BIG, seed=1)
    write_nifti(real, ws / "real" / "real_000.nii.gz")
    # a second phantom would cost minutes more on 2 cores; the viewer's work does not depend on content
    noise = np.random.default_rng(2).normal(0.0, 30.0, BIG).astype(np.float32)
    write_nifti(real.with_array(real.array + noise), ws / "generated" / "gen_000.nii.gz")
    return "ctdiff.data.phantom.make_phantom 512x512x133 (seed 1) and the same phantom + 30 HU white noise"


def demo_pair(ws: Path) -> str:
    from ctdiff.data.phantom import make_phantom

    sample = sorted((REPO / "ctdiff_app" / "demo" / "assets" / "samples").glob("*.nii.gz"))[0]
    gen = read_volume(sample)
    (ws / "generated").mkdir(parents=True)
    shutil.copy(sample, ws / "generated" / sample.name)
    real, _ = make_phantom(shape=gen.shape, seed=1)
    write_nifti(real.with_array(real.array, affine=gen.affine), ws / "real" / "case_000.nii.gz")
    return f"demo sample {sample.name} {'x'.join(map(str, gen.shape))} + phantom of that shape"


PAIRS = {
    "realct": ("512x512x133 real CT pair", realct_pair),
    "phantom": ("512x512x133 phantom pair", phantom_pair),
    "demo": ("demo pair", demo_pair),
}


# ---------------------------------------------------------------------------------- browser
class Server:
    def __init__(self, workspace: Path, repo: Path = REPO):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = open(workspace.parent / f"streamlit-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--server.port",
                str(self.port),
                "--server.address",
                "127.0.0.1",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=repo,
            env={**os.environ, "CTDIFF_WORKSPACE": str(workspace)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("streamlit did not start")

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


def warm_up(browser, url: str) -> None:
    """Home page once, to the end of its run: the server's first script run pays the Python imports
    (and Home reads every volume for its cohort summary), not the timed visits."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url)
    page.get_by_role("heading").first.wait_for(timeout=600_000)
    # the end of Home's run: its last cohort summary (a "running" indicator check passed before Home had
    # reached the generated cohort, so its background read of that pane never started)
    page.get_by_text("Generated volumes").wait_for(timeout=600_000)
    page.wait_for_timeout(2000)
    page.close()


STAGES_JS = """() => {
  const S = window.ctViewer, o = performance.timeOrigin, t = Object.values(S.timings);
  const abs = (v) => (v === undefined || v === null ? null : o + v);
  return {
    iframe: o,
    args: abs(S.renderAt ?? Math.min(...t.map((p) => p.start))),
    panes: t.map((p) => ({ slice: abs(p.slice), fetched: abs(p.fetched), preview: abs(p.preview), parsed: abs(p.parsed), loaded: abs(p.loaded), drawn: abs(p.drawn) })),
    urls: (S.args.volumes || []).map((v) => v.url),
  };
}"""


def open_viewer(page, url: str) -> tuple[object, dict]:
    """Open the slice browser; returns the viewer frame and the first-display times (s after goto)."""
    t0 = time.time()
    page.goto(url + "/Slice_browser")
    page.get_by_role("heading", name="Slice browser", exact=True).wait_for(timeout=900_000)
    heading = time.time() - t0
    page.wait_for_selector("iframe[src*='ct_viewer']", timeout=900_000)
    frame = next(f for f in page.frames if "ct_viewer" in f.url)
    frame.wait_for_function("() => window.ctViewer && window.ctViewer.ready", timeout=900_000, polling=20)
    wall = time.time() - t0
    raw = frame.evaluate(STAGES_JS)
    rel = lambda v: None if v is None else round(v / 1000 - t0, 3)  # noqa: E731
    panes = [{k: rel(v) for k, v in p.items()} for p in raw["panes"]]
    out = {
        # both panes show their slice: the preview (new viewer) or NiiVue's drawing, whichever came first
        "first_image_s": max(min(x for x in (p.get("preview"), p.get("drawn")) if x is not None) for p in panes),
        "first_display_s": round(wall, 3),
        "heading_s": round(heading, 3),
        "iframe_s": rel(raw["iframe"]),
        "volume_urls_s": rel(raw["args"]),
        "panes": panes,
        "urls": raw["urls"],
    }
    return frame, out


def transfer(url: str, media: str, ranged: bool) -> dict:
    """GET one volume as the old viewer (gzip accepted) or the new one (byte range) asks for it."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    headers = {"Accept-Encoding": "gzip, deflate, br, zstd"}
    if ranged:
        headers["Range"] = "bytes=0-"
    t0 = time.perf_counter()
    conn.request("GET", media if media.startswith("/") else "/" + media, headers=headers)
    r = conn.getresponse()
    body = r.read()
    dt = time.perf_counter() - t0
    conn.close()
    return {"s": round(dt, 3), "status": r.status, "wire_bytes": len(body), "encoding": r.getheader("Content-Encoding")}


def steps(page, frame, n: int, check_pixels: bool) -> tuple[list[float], int]:
    """Press arrow keys n times; returns the per-step latencies (ms) and how many steps changed both panes."""
    frame.evaluate(f"() => {{ window.ctViewer.measurePixels = {str(check_pixels).lower()}; }}")
    frame.locator("#pane-0").click()
    depth = frame.evaluate("() => window.ctViewer.panes[0].nv.volumes[0].dimsRAS[3]")
    times, changed, prev, key = [], 0, None, "ArrowUp"
    for _ in range(n):
        z = frame.evaluate(
            "() => window.ctViewer.panes[0].nv.frac2vox(window.ctViewer.panes[0].nv.scene.crosshairPos)[2]"
        )
        if z >= depth - 1:
            key = "ArrowDown"
        elif z <= 0:
            key = "ArrowUp"
        page.keyboard.press(key)
        frame.wait_for_function("() => window.ctViewer.lastStep && window.ctViewer.lastStep.tFrame", polling="raf")
        last = frame.evaluate(
            "() => { const s = window.ctViewer.lastStep; window.ctViewer.lastStep = null; return s; }"
        )
        times.append(last["tFrame"] - last["t0"])
        if check_pixels:
            pix = last["pixels"]
            if prev is not None and len(pix) == 2 and all(a != b for a, b in zip(pix, prev)):
                changed += 1
            prev = pix
    return times, changed


def first_other_plane(page, frame) -> float:
    """Seconds from a click on "Coronal" to both panes drawn in it (read back, so the GPU work is done).

    The new viewer opens axial panes without NiiVue's 3D texture and builds it on the first other plane.
    """
    t0 = time.perf_counter()
    frame.locator("[data-plane='coronal']").click()
    frame.evaluate(
        """() => { for (const p of window.ctViewer.panes) { p.nv.drawScene(); const gl = p.nv.gl;
        gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4)); } }"""
    )
    dt = time.perf_counter() - t0
    frame.locator("[data-plane='axial']").click()
    return round(dt, 3)


def summary(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    return {
        "median": statistics.median(s),
        "p95": s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))],
        "min": s[0],
        "max": s[-1],
        "n": len(s),
    }


SERVER_PREP = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, ".")
from pages.components import data
out = []
for p in sys.argv[1:]:
    t0 = time.perf_counter()
    r = data.load_viewer_volume(p, "x")
    v = r[0] if isinstance(r, tuple) else r  # (volume, error) here; the volume itself before
    v.payload("centre"), v.content_id("centre")
    out.append({"file": "/".join(Path(p).parts[-2:]), "s": round(time.perf_counter() - t0, 3), "bytes": len(v.payload("centre"))})
print(json.dumps(out))
"""


def server_prep(repo: Path, files: list[Path]) -> list[dict]:
    """The slice browser's viewer loader, cold, per file, in a fresh process of the app at ``repo``."""
    res = subprocess.run(
        [sys.executable, "-c", SERVER_PREP, *map(str, files)], cwd=repo, capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def cold_visit(ws: Path, repo: Path) -> dict:
    """One more cold visit: a fresh server and browser, Home once (as ``warm_up``), then the slice browser."""
    from playwright.sync_api import sync_playwright

    server = Server(ws, repo)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            warm_up(browser, server.url)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            load = os.getloadavg()[0]
            _, visit = open_viewer(page, server.url)
            visit.update(visit="cold", load=round(load, 1))
            browser.close()
            return visit
    finally:
        server.close()


def measure_pair(
    name: str, make, n_steps: int, repeats: int, repos: dict[str, Path], cold_visits: int = 0, first_pass: bool = True
) -> dict:
    from playwright.sync_api import sync_playwright

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        t0 = time.perf_counter()
        out["source"] = make(ws)
        print(f"[{name}] wrote the pair in {time.perf_counter() - t0:.1f} s ({out['source']})", flush=True)
        (ws / "workspace.json").write_text(json.dumps({"name": f"bench-{name}"}))
        files = sorted(ws.glob("real/*")) + sorted(ws.glob("generated/*"))
        for version, repo in repos.items():
            if not first_pass:
                out[version] = {"visits": []}
                continue
            res: dict = {"server_prep": server_prep(repo, files), "visits": []}
            print(f"[{name}/{version}] server read + prepare (cold, per file): {res['server_prep']}", flush=True)
            server = Server(ws, repo)
            try:
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                    warm_up(browser, server.url)
                    for r in range(repeats):  # a fresh page each time: the volumes travel again
                        page = browser.new_page(viewport={"width": 1440, "height": 900})
                        load = os.getloadavg()[0]
                        frame, visit = open_viewer(page, server.url)
                        visit.update(visit="cold" if r == 0 else "warm", load=round(load, 1))
                        res["visits"].append(visit)
                        print(f"[{name}/{version}] {visit}", flush=True)
                        if r < repeats - 1:
                            page.close()
                    res["transfer"] = [
                        {
                            "old (whole, gzip accepted)": transfer(server.url, u, False),
                            "new (range)": transfer(server.url, u, True),
                        }
                        for u in visit["urls"]
                    ]
                    print(f"[{name}/{version}] transfer: {res['transfer']}", flush=True)
                    if version == "new":
                        steps(page, frame, 5, check_pixels=False)  # warm-up
                        times, _ = steps(page, frame, n_steps, check_pixels=False)
                        _, changed = steps(page, frame, 21, check_pixels=True)
                        res["step"] = summary(times)
                        res["pixel_check"] = f"{changed}/20 steps changed both panes' pixels"
                        res["first_other_plane_s"] = first_other_plane(page, frame)
                        print(f"[{name}/{version}] first switch to coronal: {res['first_other_plane_s']} s", flush=True)
                        print(
                            f"[{name}/{version}]",
                            {k: round(v, 1) for k, v in res["step"].items()},
                            res["pixel_check"],
                            flush=True,
                        )
                    browser.close()
            finally:
                server.close()
            out[version] = res
        # more cold visits (one per fresh server), the versions taking turns so both see the same machine
        for _ in range(cold_visits):
            for version, repo in repos.items():
                visit = cold_visit(ws, repo)
                out[version]["visits"].append(visit)
                print(f"[{name}/{version}] {visit}", flush=True)
    return out


# ------------------------------------------------------------------------- old server viewer
def server_moves(moves: int = 20, warmup: int = 3) -> dict:
    """The previous viewer: one AppTest rerun of the slice browser per slider move (512x512x26, axial)."""
    from streamlit.testing.v1 import AppTest

    from ctdiff.data.phantom import make_phantom

    with tempfile.TemporaryDirectory() as tmp:
        real, gen = Path(tmp) / "real", Path(tmp) / "generated"
        write_nifti(make_phantom(shape=(512, 512, 26), seed=1)[0], real / "a.nii.gz")
        write_nifti(make_phantom(shape=(512, 512, 26), seed=2, noise_hu=30.0)[0], gen / "b.nii.gz")
        at = AppTest.from_file(str(REPO / "pages" / "1_Slice_browser.py"), default_timeout=300)
        for k, v in {
            "real_dir": str(real),
            "generated_dir": str(gen),
            "report_dir": None,
            "run_dir": None,
            "selection_source": "benchmark",
            "renderer": "server",
        }.items():
            at.session_state[k] = v
        at.run()
        n = at.slider(key="real_slice").max
        times = []
        for i in range(warmup + moves):
            value = 1 + (i * 7) % n
            t0 = time.perf_counter()
            at.slider(key="real_slice").set_value(value).run()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return summary(times)


# ----------------------------------------------------------------------------------- report
def _fmt(v) -> str:
    return "—" if v is None else f"{v:.2f}"


def report_lines(
    results: dict, old: dict | None, load0: float, load1: float, baseline: Path | None, date: str
) -> list[str]:
    lines = [
        "# Benchmark: slice browser viewer in a real browser",
        "",
        "`benchmarks/bench_app.py`: `streamlit run app.py`, Playwright driving Debian's headless chromium with",
        "software WebGL (SwiftShader: no GPU), slice browser with the NiiVue viewer, two linked panes (side by side).",
        "Slice step = keydown event -> the next animation frame after both panes were redrawn; a separate pass",
        "reads the pixels back and checks both panes changed. First image = `page.goto` -> both panes show their",
        "slice on screen (the new viewer's preview, drawn from the bytes while NiiVue builds its texture; two",
        "animation frames after drawing it). First display = `page.goto` -> both volumes drawn by NiiVue (the",
        "viewer waits on a WebGL fence, so the work is done) and the viewer interactive. Cold = the first visit",
        "of the slice browser by this browser and server, right after Home (which, in the new app, starts",
        "preparing the pair the slice browser opens with); warm = a fresh page while the server holds the bytes.",
        "Raw numbers: `benchmarks/results/app-viewer.json`.",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other work (load average "
        f"{load0:.1f} at the start, {load1:.1f} at the end), Python {platform.python_version()}",
        f"- date: {date}",
    ]
    if baseline:
        lines.append(f"- old = the app as checked out in `{baseline}` (same run, same machine, same browser)")
    lines += [
        "",
        "## First display",
        "",
        "Seconds after `page.goto`: both panes show their slice (first image), both drawn by NiiVue (first display),",
        "the page's heading shown, iframe created, volume URLs in the iframe, each pane's volume fetched /",
        "parsed by NiiVue / added to NiiVue (texture made) / drawn (pane 0 real, pane 1 generated; '—': the app",
        "does not stamp that stage); load = 1-minute load average.",
        "",
        "| pair | app | visit | load | first image (s) | first display (s) | heading | iframe | URLs | pane 0 fetched / parsed / added / drawn | pane 1 fetched / parsed / added / drawn |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pair, r in results.items():
        for version in ("old", "new"):
            for v in r.get(version, {}).get("visits", []):
                panes = [
                    " / ".join(_fmt(p.get(k)) for k in ("fetched", "parsed", "loaded", "drawn")) for p in v["panes"]
                ]
                first_image = v["first_image_s"]
                lines.append(
                    f"| {pair} | {version} | {v['visit']} | {v['load']} | **{first_image:.2f}** | "
                    f"**{v['first_display_s']:.2f}** | "
                    f"{_fmt(v['heading_s'])} | {_fmt(v['iframe_s'])} | {_fmt(v['volume_urls_s'])} | {' | '.join(panes)} |"
                )
    lines += [
        "",
        "## Server read + prepare (cold, fresh process, per file) and HTTP transfer",
        "",
        "| pair | app | file | read + prepare (s) | bytes |",
        "|---|---|---|---|---|",
    ]
    for pair, r in results.items():
        for version in ("old", "new"):
            for f in r.get(version, {}).get("server_prep", []):
                lines.append(f"| {pair} | {version} | {f['file']} | {f['s']:.2f} | {f['bytes']} |")
    lines += [
        "",
        "Transfer of each volume from the running server (new app), as the old viewer asked for it (whole",
        "response; Chromium always sends `Accept-Encoding: gzip`, so Streamlit gzips it at level 9) and as the",
        "new one does (`Range: bytes=0-`, answered 206 and never compressed):",
        "",
        "| pair | volume | old: s | old: bytes on the wire | new: s | new: bytes on the wire |",
        "|---|---|---|---|---|---|",
    ]
    for pair, r in results.items():
        for i, t in enumerate(r.get("new", {}).get("transfer", [])):
            a, b = t["old (whole, gzip accepted)"], t["new (range)"]
            lines.append(
                f"| {pair} | {i} | {a['s']:.2f} | {a['wire_bytes']} ({a['encoding'] or 'identity'}) | {b['s']:.2f} | {b['wire_bytes']} |"
            )
    lines += [
        "",
        "## Slice step",
        "",
        "| pair | step median (ms) | step p95 (ms) | min | max | steps | pixels changed | first switch to coronal (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair, r in results.items():
        s = r["new"].get("step")
        if s:
            lines.append(
                f"| {pair} | {s['median']:.1f} | {s['p95']:.1f} | {s['min']:.1f} | {s['max']:.1f} | {s['n']} | "
                f"{r['new']['pixel_check'].split(' ')[0]} | {_fmt(r['new'].get('first_other_plane_s'))} |"
            )
    lines += ["", "Data: " + "; ".join(f"{k}: {r['source']}" for k, r in results.items()) + "."]
    if old:
        lines += [
            "",
            f"Old server-rendered viewer (AppTest rerun per slider move, 512x512x26 axial, same run): "
            f"median {old['median']:.1f} ms, p95 {old['p95']:.1f} ms ({old['n']} moves).",
        ]
    big = next((r for k, r in results.items() if k.startswith("512")), None)
    if big:
        visits = big["new"]["visits"]
        st = big["new"].get("step")

        def by_visit(key: str) -> str:
            parts = []
            for kind in ("cold", "warm"):
                times = [v[key] for v in visits if v["visit"] == kind]
                if times:
                    verdict = "met" if max(times) <= FIRST_DISPLAY_S else "not met"
                    parts.append(f"{kind} {', '.join(f'{t:.2f}' for t in times)} s ({verdict})")
            return "; ".join(parts)

        lines += [
            "",
            f"Targets: step median <= {STEP_MEDIAN_MS:.0f} ms, p95 <= {STEP_P95_MS:.0f} ms, first display <= "
            f"{FIRST_DISPLAY_S:.0f} s (512x512x133). Step: "
            + ("met" if st and st["median"] <= STEP_MEDIAN_MS and st["p95"] <= STEP_P95_MS else "not met")
            + f". First image (both panes show their opening slice): {by_visit('first_image_s')}. "
            f"Viewer drawn by NiiVue and interactive: {by_visit('first_display_s')}.",
        ]
    lines += ["", "Reproduce: `.venv/bin/python benchmarks/bench_app.py --baseline DIR --server`", ""]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=["demo", "realct"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3, help="first-display visits per pair (the first is cold)")
    ap.add_argument("--baseline", type=Path, help="another checkout of the app, measured the same way (old)")
    ap.add_argument("--baseline-repeats", type=int, default=2)
    ap.add_argument(
        "--cold-visits",
        type=int,
        default=0,
        help="512x512 pairs: this many more cold visits per version, each on a fresh server, versions alternating",
    )
    ap.add_argument("--server", action="store_true", help="also time the old server-rendered viewer (AppTest)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks-app.md")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true", help="rewrite --out from the numbers in --json")
    args = ap.parse_args(argv)
    from ctdiff.atomic import write_text

    if args.report_only:
        rec = json.loads(args.json.read_text())
        base = Path(rec["baseline"]) if rec.get("baseline") else None
        lines = report_lines(rec["pairs"], rec["server_rendered_step_ms"], *rec["load_average"], base, rec["date"])
        write_text(args.out, "\n".join(lines))
        print("\n".join(lines))
        return 0

    load0 = os.getloadavg()[0]
    results = {}
    for key in args.pairs:
        label, make = PAIRS[key]
        res = measure_pair(label, make, args.steps, args.repeats, {"new": REPO})
        if args.baseline:
            old = measure_pair(label, make, args.steps, args.baseline_repeats, {"old": args.baseline.resolve()})
            res["old"] = old["old"]
        if args.cold_visits and label.startswith("512"):
            more = measure_pair(
                label,
                make,
                0,
                0,
                {"new": REPO, **({"old": args.baseline.resolve()} if args.baseline else {})},
                cold_visits=args.cold_visits,
                first_pass=False,
            )
            for version, extra in more.items():
                if version in ("new", "old") and version in res:
                    res[version]["visits"] += extra["visits"]
        results[label] = res
    old = server_moves() if args.server else None
    load1 = os.getloadavg()[0]

    date = time.strftime("%Y-%m-%d %H:%M")
    lines = report_lines(results, old, load0, load1, args.baseline, date)
    write_text(args.out, "\n".join(lines))
    record = {
        "date": date,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "load_average": [load0, load1],
        "baseline": str(args.baseline) if args.baseline else None,
        "pairs": results,
        "server_rendered_step_ms": old,
    }
    write_text(args.json, json.dumps(record, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
