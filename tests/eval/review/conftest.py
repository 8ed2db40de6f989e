"""Fixtures for review-session tests: two tiny cohorts that differ in shape and spacing, a database.

Folder and file names are distinctive on purpose, so leak checks can search for them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

from ctdiff.data.io import write_nifti
from ctdiff.data.volume import Volume
from eval.review import db as review_db

REAL_FOLDER = "truthcohortfolder"
GEN_FOLDER = "modelcohortfolder"
REAL_STEM = "patientscanreal"
GEN_STEM = "diffusionsamplegen"


def body_volume(shape, spacing, rng: np.random.Generator, noise: float) -> Volume:
    """Air, an elliptical soft-tissue body with a bright 'bone', and Gaussian noise (HU)."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[(x / 0.8) ** 2 + (y / 0.6) ** 2 <= 1] = 40.0
    hu[(x - 0.3) ** 2 + y**2 <= 0.04] = 700.0
    hu += rng.normal(0, noise, size=shape).astype(np.float32)
    return Volume.from_spacing(hu, spacing)


def write_cohorts(root: Path, n_real: int = 3, n_gen: int = 3, seed: int = 0) -> tuple[Path, Path]:
    """Real: 32x32x8 at 1x1x3 mm. Generated: 16x16x10 at 2x2x2.4 mm (same field of view)."""
    rng = np.random.default_rng(seed)
    real, gen = root / REAL_FOLDER, root / GEN_FOLDER
    for i in range(n_real):
        write_nifti(body_volume((32, 32, 8), (1.0, 1.0, 3.0), rng, 10.0), real / f"{REAL_STEM}{i:03d}.nii.gz")
    for i in range(n_gen):
        write_nifti(body_volume((16, 16, 10), (2.0, 2.0, 2.4), rng, 40.0), gen / f"{GEN_STEM}{i:03d}.nii.gz")
    return real, gen


@pytest.fixture
def cohorts(tmp_path) -> tuple[Path, Path]:
    return write_cohorts(tmp_path / "data")


@pytest.fixture
def db_url(tmp_path) -> str:
    yield f"sqlite:///{tmp_path / 'db' / 'reviews.sqlite'}"
    review_db.dispose_engines()


@pytest.fixture
def make_cohorts(tmp_path):
    """Factory: ``make_cohorts(n_real, n_gen, name="data") -> (real_dir, gen_dir)``."""

    def make(n_real: int = 3, n_gen: int = 3, name: str = "data", seed: int = 0) -> tuple[Path, Path]:
        return write_cohorts(tmp_path / name, n_real, n_gen, seed)

    return make


# ------------------------------------------------------------------ a throw-away PostgreSQL server
def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server on a free port in a temporary folder (stopped and removed afterwards).

    scripts/test installs Debian's postgresql when initdb is absent; a machine without it fails these
    tests rather than skipping them. As root (CI), the server
    runs as the ``postgres`` user, since PostgreSQL refuses to run as root.
    """
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed; run scripts/test or apt-get install postgresql"
        )
    import pg8000  # noqa: F401  (test requirement: a missing driver must fail, not skip)

    root = Path(tempfile.mkdtemp(prefix="ctdiff-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        run(
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr}") from None
    yield f"postgresql+pg8000://postgres@127.0.0.1:{port}"
    review_db.dispose_engines()
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server):
    """A fresh, empty database on the module's PostgreSQL server."""
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    yield f"{postgres_server}/{name}"
    review_db.dispose_engines()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path):
    """A fresh review database on each backend in turn: one test body serves SQLite and PostgreSQL."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_url")
    else:
        yield f"sqlite:///{tmp_path / 'reviews.sqlite'}"
        review_db.dispose_engines()
