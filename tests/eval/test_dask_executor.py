"""Feature extraction on a Dask cluster (LocalCluster, 2 workers): identical to a local run, same cache."""

from __future__ import annotations

import distributed
import numpy as np
import pytest

from eval.cli import main as eval_main
from eval.extract_cli import extract_folders
from eval.report import build_report

N = 4
SHAPE = (32, 32, 12)  # smaller than the other eval tests' phantoms: only the plumbing is under test


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def folders(tmp_path_factory, ph):
    root = tmp_path_factory.mktemp("dask")
    return {
        "root": root,
        "real": ph.write_folder(root / "real", ph.phantom_arrays(51, N, shape=SHAPE)),
        "gen": ph.write_folder(root / "gen", ph.phantom_arrays(52, N, noise_hu=30.0, shape=SHAPE)),
    }


@pytest.mark.slow  # radiomics extraction of 8 scans, twice
def test_dask_report_equals_local_report(cluster, folders, ph):
    settings = {**ph.SMALL_SETTINGS, "n_bootstrap": 20}
    local = build_report(
        folders["real"],
        folders["gen"],
        metrics="kid,precision",
        workers=1,
        cache_dir=folders["root"] / "cache-local",
        settings=settings,
    )
    remote = build_report(
        folders["real"],
        folders["gen"],
        metrics="kid,precision",
        executor="dask",
        scheduler=cluster.scheduler_address,
        cache_dir=folders["root"] / "cache-dask",
        settings=settings,
    )
    for name in ("kid", "precision"):  # (FRD reads the same feature matrices; its sqrtm is slow)
        assert remote["metrics"][name]["value"] == local["metrics"][name]["value"], name
        assert remote["metrics"][name]["ci95"] == local["metrics"][name]["ci95"], name
    assert remote["settings"]["cache_stats"]["radiomics-frd-v1"]["real"]["extracted"] == N
    assert remote["settings"]["executor"].startswith("dask (")
    # the two caches hold the same entries, bit for bit
    a = sorted(p.relative_to(folders["root"] / "cache-local") for p in (folders["root"] / "cache-local").rglob("*.npz"))
    b = sorted(p.relative_to(folders["root"] / "cache-dask") for p in (folders["root"] / "cache-dask").rglob("*.npz"))
    assert a == b and len(a) == 2 * N
    for rel in a:
        with np.load(folders["root"] / "cache-local" / rel) as x, np.load(folders["root"] / "cache-dask" / rel) as y:
            assert np.array_equal(x["values"], y["values"]) and list(x["names"]) == list(y["names"])


def test_extract_fills_the_cache_a_report_then_reads(cluster, folders, ph, capsys):
    cache = folders["root"] / "cache-extract"
    out = extract_folders(
        [folders["real"], folders["gen"]], cache_dir=cache, executor="dask", scheduler=cluster.scheduler_address
    )
    assert (out["cases"], out["extracted"], out["cached"], out["failed"]) == (2 * N, 2 * N, 0, [])
    report = build_report(
        folders["real"], folders["gen"], metrics="kid", workers=1, cache_dir=cache, settings=ph.SMALL_SETTINGS
    )
    assert report["settings"]["cache_stats"]["radiomics-frd-v1"]["real"] == {"cached": N, "extracted": 0, "failed": 0}
    # the CLI: a second extract finds everything cached; bad input exits 2 with the folder named
    assert eval_main(["extract", str(folders["real"]), "--cache-dir", str(cache), "--workers", "1"]) == 0
    assert f"{N} already cached, 0 extracted" in capsys.readouterr().err
    missing = folders["root"] / "nope"
    assert eval_main(["extract", str(missing), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and str(missing) in err
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses an unknown executor itself
        eval_main(
            [
                "report",
                "--real",
                str(folders["real"]),
                "--generated",
                str(folders["gen"]),
                "--out",
                str(folders["root"] / "o"),
                "--executor",
                "spark",
            ]
        )
    assert exit_info.value.code == 2 and "invalid choice: 'spark'" in capsys.readouterr().err
