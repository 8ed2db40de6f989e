"""Property-based fuzzing (Hypothesis) of the readers and of every CLI's option parser.

The property everywhere: a valid result or a one-line error (``InputError``/``ConfigError`` from
the library; exit code 2 and one ``error:`` line from a CLI); never a traceback, a hang or a partial
output. Example counts are small so the whole file stays well under a minute on 2 cores; the
inputs that once failed live in ``tests/corpus`` and run on every test run (tests/test_corpus.py).
"""

from __future__ import annotations

import atexit
import gzip
import itertools
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis caches example constants under ./.hypothesis (the checkout) as soon as tests are
# collected: point it at a temporary folder first, removed when the test process ends
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="ctdiff-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, True)
set_hypothesis_home_dir(_HYPOTHESIS_HOME)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ctdiff.data.io import read_volume
from ctdiff.data.volume import Volume
from ctdiff.errors import CTDiffError, InputError
from tests.corpus.bad_inputs import _dicom, _nifti

# no example database: tests write only under temp folders, never into the checkout
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# the option parsers: fewer examples, each one runs a command's argument parsing and validation
FUZZ_CLI = settings(FUZZ, max_examples=30)
pytestmark = pytest.mark.timeout(300)

SUFFIXES = (".nii", ".nii.gz", ".npy", ".npz", ".dcm")
_counter = itertools.count()


def _fresh(root: Path, name: str) -> Path:
    folder = root / f"{name}_{next(_counter)}"
    folder.mkdir()
    return folder


def _read_property(path: Path) -> None:
    """read_volume returns a finite 3D float32 volume or raises a one-line InputError naming the file."""
    try:
        vol = read_volume(path)
    except InputError as exc:
        text = str(exc)
        assert "\n" not in text and str(path) in text
        return
    assert isinstance(vol, Volume)
    assert vol.array.ndim == 3 and vol.array.dtype == np.float32
    assert np.isfinite(vol.array).all()
    assert np.isfinite(vol.affine).all() and abs(np.linalg.det(vol.affine[:3, :3])) > 0


# ------------------------------------------------------------------------------ readers
@FUZZ
@given(data=st.binary(min_size=0, max_size=2048), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_never_read_as_a_volume(tmp_path, data, suffix):
    path = _fresh(tmp_path, "rb") / f"x{suffix}"
    path.write_bytes(data)
    with pytest.raises(InputError):
        _read_property(path)
        raise InputError("random bytes were read as a volume", path)  # reached only when no error


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("valid")
    arr = np.random.default_rng(0).integers(-1000, 1500, size=(10, 8, 4)).astype(np.int16)
    files = {
        ".nii.gz": _nifti(root, "v.nii.gz", arr),
        ".nii": _nifti(root, "v.nii", arr),
    }
    np.savez_compressed(root / "v.npz", array=arr.astype(np.float32), spacing=np.array([1.0, 1.0, 2.0]))
    files[".npz"] = root / "v.npz"
    np.save(root / "v.npy", arr.astype(np.float32))
    files[".npy"] = root / "v.npy"
    dcm = root / "dcm"
    dcm.mkdir()
    files[".dcm"] = _dicom(dcm, slope=1, intercept=-1024)
    return {k: v.read_bytes() for k, v in files.items()}


@FUZZ
@given(
    kind=st.sampled_from(SUFFIXES),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), max_size=3),
)
def test_truncated_and_flipped_files(tmp_path, valid_files, kind, cut, flips):
    data = bytearray(valid_files[kind])
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    data = data[: max(0, int(math.ceil(cut * len(data))))] if cut < 1.0 else data
    path = _fresh(tmp_path, "tf") / f"v{kind}"
    path.write_bytes(bytes(data))
    if kind == ".npy":
        _read_property_npy = read_volume  # .npy stores no spacing: give one, as --npy-spacing does
        try:
            vol = _read_property_npy(path, spacing=(1.0, 1.0, 2.0))
        except InputError as exc:
            assert "\n" not in str(exc)
            return
        assert np.isfinite(vol.array).all()
        return
    _read_property(path)
    if kind == ".nii.gz" and flips and cut == 1.0:
        # the gzip layer checks CRC-32 and length: a flipped payload byte can never pass as data
        try:
            gzip.decompress(bytes(data))
        except Exception:
            with pytest.raises(InputError):
                read_volume(path)


# NIfTI-1 header fields (offset, numpy type) that a corrupt or hostile file may set to anything
HEADER_FIELDS = {
    "dim": (40, "<i2", 8),
    "datatype": (70, "<i2", 1),
    "bitpix": (72, "<i2", 1),
    "pixdim": (76, "<f4", 8),
    "vox_offset": (108, "<f4", 1),
    "scl_slope": (112, "<f4", 1),
    "scl_inter": (116, "<f4", 1),
    "qform_code": (252, "<i2", 1),
    "sform_code": (254, "<i2", 1),
    "srow": (280, "<f4", 12),
}


@FUZZ
@given(
    changes=st.lists(
        st.tuples(
            st.sampled_from(sorted(HEADER_FIELDS)),
            st.integers(0, 11),
            st.one_of(st.integers(-(2**15), 2**15 - 1), st.floats(allow_nan=True, allow_infinity=True, width=32)),
        ),
        min_size=1,
        max_size=4,
    ),
    gz=st.booleans(),
)
def test_random_nifti_headers(tmp_path, valid_files, changes, gz):
    raw = bytearray(gzip.decompress(valid_files[".nii.gz"]))
    for field, index, value in changes:
        offset, dtype, count = HEADER_FIELDS[field]
        i = index % count
        size = np.dtype(dtype).itemsize
        if np.dtype(dtype).kind == "i":
            v = np.array(int(value) if not isinstance(value, float) or math.isfinite(value) else 0).astype(dtype)
        else:
            v = np.array(value, dtype=dtype)
        raw[offset + i * size : offset + (i + 1) * size] = v.tobytes()
    path = _fresh(tmp_path, "hdr") / ("v.nii.gz" if gz else "v.nii")
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    _read_property(path)


# ------------------------------------------------------------------------------ CLI option parsers
class Reached(BaseException):
    """Raised by the stubbed heavy work: validation let the options through. A BaseException, so
    the CLI's top-level ``except Exception`` handler does not turn it into an error line."""

    def __init__(self, **seen):
        super().__init__("reached")
        self.seen = seen


def _reach(**names):
    def stub(*args, **kwargs):
        raise Reached(args=args, **kwargs)

    return stub


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 1e308, 5e-324]))
INTS = st.one_of(st.integers(-10, 200), st.sampled_from([0, -1, 2**31, 2**63, 2**70, 10**30]))
JUNK = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
DEVICES = st.one_of(
    st.sampled_from(["auto", "cpu", "cuda", "cuda:7", "mps", "tpu", "", "cpu:0", "meta", "cuda:-1"]), JUNK
)


def _num(x) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def _run_cli(main, argv, capsys):
    """(exit code, stderr, validated?) of one command line; argparse type errors exit 2 via SystemExit."""
    try:
        rc = main(argv)
    except Reached:
        capsys.readouterr()
        return 0, "", True
    except SystemExit as exc:  # argparse: usage line + one 'error:' line
        err = capsys.readouterr().err
        assert exc.code == 2 and "error:" in err, err
        return 2, err, False
    err = capsys.readouterr().err
    return rc, err, False


def _one_line_error(rc, err):
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:") or ": error:" in line]  # ours, argparse's
    assert len(lines) == 1 and "Traceback" not in err, err


@FUZZ_CLI
@given(
    n=INTS,
    shape=st.lists(INTS, min_size=3, max_size=3),
    fov=st.lists(FLOATS, min_size=3, max_size=3),
    noise=FLOATS,
    seed=INTS,
)
def test_phantom_options(tmp_path, monkeypatch, capsys, n, shape, fov, noise, seed):
    import ctdiff.data.phantom.cli as phantom  # the command calls write_cohort there
    from ctdiff.cli import main

    monkeypatch.setattr(phantom, "write_cohort", _reach())
    out = tmp_path / f"o{next(_counter)}"
    argv = [
        "phantom",
        "--out",
        str(out),
        "--n",
        str(n),
        "--shape",
        *map(str, shape),
        "--fov",
        *map(_num, fov),
        "--noise-hu",
        _num(noise),
        "--seed",
        str(seed),
    ]
    rc, err, reached = _run_cli(main, argv, capsys)
    if reached:
        assert 1 <= n and all(2 <= s <= 4096 for s in shape) and all(math.isfinite(f) and f > 0 for f in fov)
        assert math.isfinite(noise) and noise >= 0 and 0 <= seed < 2**32
    else:
        _one_line_error(rc, err)
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    from ctdiff.data.phantom import write_cohort

    root = tmp_path_factory.mktemp("cohorts")
    write_cohort(root / "real", n=2, shape=(8, 8, 4), seed=0, progress=False)
    write_cohort(root / "gen", n=2, shape=(8, 8, 4), seed=1, progress=False)
    (root / "ckpt.pt").write_bytes(b"stub")
    return root


@FUZZ_CLI
@given(
    spacing=st.one_of(st.none(), st.lists(FLOATS, min_size=3, max_size=3)),
    shape=st.one_of(st.none(), st.lists(INTS, min_size=3, max_size=3)),
    margin=FLOATS,
    clip=st.lists(FLOATS, min_size=2, max_size=2),
    assume=st.sampled_from([None, "identity", "offset-1024", "x"]),
)
def test_prepare_options(tmp_path, monkeypatch, capsys, tiny_cohort, spacing, shape, margin, clip, assume):
    import ctdiff.data.prepare as prepare
    from ctdiff.cli import main

    monkeypatch.setattr(prepare, "_prepare_into", _reach())
    out = tmp_path / f"o{next(_counter)}"
    argv = [
        "prepare",
        "--src",
        str(tiny_cohort / "real"),
        "--out",
        str(out),
        "--crop-margin",
        _num(margin),
        "--clip",
        *map(_num, clip),
    ]
    if spacing is not None:
        argv += ["--spacing", *map(_num, spacing)]
    elif shape is not None:
        argv += ["--shape", *map(str, shape)]
    if assume is not None:
        argv += ["--assume-hu", assume]
    rc, err, reached = _run_cli(main, argv, capsys)
    if reached:
        assert math.isfinite(margin) and margin >= 0 and clip[0] < clip[1] and all(map(math.isfinite, clip))
        assert spacing is None or all(math.isfinite(s) and s > 0 for s in spacing)
        assert shape is None or spacing is not None or all(s >= 1 for s in shape)
    else:
        _one_line_error(rc, err)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


class _FakeBundle:
    class config:  # noqa: N801 - the attribute paths sample.run reads
        class sample:  # noqa: N801
            sampler, steps = "ddpm", 50

    class diffusion:  # noqa: N801
        timesteps = 100

    device = "cpu"


@FUZZ_CLI
@given(
    n=INTS, steps=st.one_of(st.none(), INTS), seed=INTS, batch=INTS, device=DEVICES, threads=st.one_of(st.none(), INTS)
)
def test_sample_options(tmp_path, monkeypatch, capsys, tiny_cohort, n, steps, seed, batch, device, threads):
    import ctdiff.diffusion.sample as sample_mod
    from ctdiff.cli import main

    monkeypatch.setattr(sample_mod, "load_bundle", lambda *a, **k: _FakeBundle())
    monkeypatch.setattr(sample_mod, "sample", _reach())
    monkeypatch.setattr(sample_mod, "apply_threads", lambda args: None)  # never change the test process
    out = tmp_path / f"o{next(_counter)}"
    argv = [
        "sample",
        "--checkpoint",
        str(tiny_cohort / "ckpt.pt"),
        "--out",
        str(out),
        "--n",
        str(n),
        "--seed",
        str(seed),
        "--batch-size",
        str(batch),
        f"--device={device}",
    ]
    if steps is not None:
        argv += ["--steps", str(steps)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    rc, err, reached = _run_cli(main, argv, capsys)
    if reached:
        assert n >= 1 and batch >= 1 and 0 <= seed <= 2**32 - n
        assert steps is None or 1 <= steps <= 100
        import torch

        name = device.strip()
        assert (
            name in ("auto", "cpu", "", "cpu:0")
            or (name in ("cuda", "cuda:0") and torch.cuda.is_available())
            or (name == "mps" and torch.backends.mps.is_available())
        )
    else:
        _one_line_error(rc, err)
    assert not out.exists()


CONFIG_KEYS = [
    "train.lr",
    "train.epochs",
    "train.batch_size",
    "diffusion.timesteps",
    "data.hu_window",
    "model.channels",
    "sample.steps",
    "sample.sampler",
    "data.val_fraction",
    "nonsense.key",
    "train",
]
YAML_VALUES = st.one_of(
    st.sampled_from(
        [
            "nan",
            ".inf",
            "-1",
            "0",
            "1e400",
            "[1, 2]",
            "[]",
            "{}",
            "null",
            "abc",
            "[-1000, 1000]",
            "[1000, -1000]",
            "2",
            "0.5",
            "ddim",
        ]
    ),
    JUNK,
)


@FUZZ_CLI
@given(
    sets=st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), YAML_VALUES), max_size=3),
    device=DEVICES,
    threads=st.one_of(st.none(), INTS),
)
def test_train_options(tmp_path, monkeypatch, capsys, tiny_cohort, sets, device, threads):
    import ctdiff.training.train as train_mod
    from ctdiff.cli import main

    monkeypatch.setattr(train_mod, "load_cases", _reach())
    monkeypatch.setattr(train_mod, "apply_threads", lambda args: None)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    out = tmp_path / f"o{next(_counter)}"
    argv = [
        "train",
        "--config",
        "configs/demo.yaml",
        "--data",
        str(tiny_cohort / "real"),
        "--out",
        str(out),
        f"--device={device}",
        "--no-progress",
    ]
    for key, value in sets:
        argv += ["--set", f"{key}={value}"]
    if threads is not None:
        argv += ["--threads", str(threads)]
    rc, err, reached = _run_cli(main, argv, capsys)
    if not reached:
        _one_line_error(rc, err)
    assert not out.exists()


METRIC_WORDS = st.sampled_from(["noise", "frd", "kid", "hu_wasserstein", "", " ", "bogus", ",", "intensity"])


@FUZZ_CLI
@given(
    bootstrap=INTS,
    seed=INTS,
    metrics=st.one_of(st.none(), st.lists(METRIC_WORDS, max_size=3).map(",".join)),
    workers=st.one_of(st.none(), INTS),
    device=DEVICES,
    same=st.booleans(),
)
def test_report_options(tmp_path, monkeypatch, capsys, tiny_cohort, bootstrap, seed, metrics, workers, device, same):
    import eval.report.build as build
    from eval.cli import main

    monkeypatch.setattr(build, "read_cohort", _reach())
    out = tmp_path / f"o{next(_counter)}"
    gen = tiny_cohort / ("real" if same else "gen")
    argv = [
        "report",
        "--real",
        str(tiny_cohort / "real"),
        "--generated",
        str(gen),
        "--out",
        str(out),
        "--bootstrap",
        str(bootstrap),
        "--seed",
        str(seed),
        f"--device={device}",
    ]
    if metrics is not None:
        argv += [f"--metrics={metrics}"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    rc, err, reached = _run_cli(main, argv, capsys)
    if reached:
        assert not same and 0 <= bootstrap and 0 <= seed < 2**32
        assert metrics is None or all(m.strip() for m in metrics.split(","))
    else:
        _one_line_error(rc, err)
    assert not out.exists()
    assert json.dumps(sorted(p.name for p in tiny_cohort.iterdir())) == json.dumps(["ckpt.pt", "gen", "real"])


DEGRADATION_WORDS = st.sampled_from(["blur", "added_noise", "", " ", "melt", ",", "contrast"])


@FUZZ_CLI
@given(
    bootstrap=INTS,
    seed=INTS,
    max_train=INTS,
    workers=INTS,
    metrics=st.one_of(st.none(), st.lists(METRIC_WORDS, max_size=3).map(",".join)),
    degradations=st.one_of(st.none(), st.lists(DEGRADATION_WORDS, max_size=3).map(",".join)),
    same=st.booleans(),
)
def test_selftest_options(
    tmp_path, monkeypatch, capsys, tiny_cohort, bootstrap, seed, max_train, workers, metrics, degradations, same
):
    import eval.selftest as selftest
    from eval.cli import main

    monkeypatch.setattr(selftest, "read_cohort", _reach())
    out = tiny_cohort / "real" if same else tmp_path / f"o{next(_counter)}"
    argv = ["selftest", "--real", str(tiny_cohort / "real"), "--out", str(out), "--force"]
    argv += ["--bootstrap", str(bootstrap), "--seed", str(seed), "--max-train", str(max_train)]
    argv += ["--workers", str(workers)]
    if metrics is not None:
        argv += [f"--metrics={metrics}"]
    if degradations is not None:
        argv += [f"--degradations={degradations}"]
    rc, err, reached = _run_cli(main, argv, capsys)
    if reached:
        assert not same and 2 <= bootstrap and 0 <= seed < 2**32 - 1 and 0 <= max_train and 1 <= workers
        assert metrics is None or all(m.strip() for m in metrics.split(","))
        assert degradations is None or any(d.strip() for d in degradations.split(","))
    else:
        _one_line_error(rc, err)
    if not same:
        assert not out.exists()
    assert json.dumps(sorted(p.name for p in tiny_cohort.iterdir())) == json.dumps(["ckpt.pt", "gen", "real"])


AE_KEYS = st.sampled_from(["steps", "batch_size", "lr", "seed", "patch", "kl_weight", "val_fraction", "nonsense"])


@FUZZ_CLI
@given(
    sets=st.lists(st.tuples(AE_KEYS, YAML_VALUES), max_size=3),
    device=DEVICES,
    threads=st.one_of(st.none(), INTS),
    same=st.booleans(),
)
def test_train_autoencoder_options(tmp_path, monkeypatch, capsys, tiny_cohort, sets, device, threads, same):
    import ctdiff.data.dataset as dataset  # train_autoencoder loads the cases from there
    import ctdiff.model.autoencoder as ae
    from ctdiff.cli import main

    monkeypatch.setattr(dataset, "load_cases", _reach())
    monkeypatch.setattr(ae.torch, "set_num_threads", lambda n: None)
    out = tiny_cohort / "real" if same else tmp_path / f"o{next(_counter)}"
    argv = ["train-autoencoder", "--data", str(tiny_cohort / "real"), "--out", str(out), "--force"]
    argv += [f"--device={device}", "--no-progress"]
    for key, value in sets:
        argv += ["--set", f"{key}={value}"]
    if threads is not None:
        argv += ["--threads", str(threads)]
    rc, err, reached = _run_cli(main, argv, capsys)
    if reached:
        assert not same and (threads is None or threads >= 1)
    else:
        _one_line_error(rc, err)
    if not same:
        assert not out.exists() or not any(out.iterdir())
    assert json.dumps(sorted(p.name for p in tiny_cohort.iterdir())) == json.dumps(["ckpt.pt", "gen", "real"])
    assert len(list((tiny_cohort / "real").iterdir())) == 3  # 2 scans and the manifest: nothing deleted


def test_library_errors_are_ctdiff_errors_for_bad_keyword_values(tmp_path):
    """The library (not only the CLI) refuses bad values with one-line errors."""
    from ctdiff.data.prepare import prepare_dataset

    for kwargs in (
        {"crop_margin_mm": float("nan")},
        {"clip": (float("inf"), 0)},
        {"spacing": (1, 1, float("nan"))},
        {"shape": (10**5, 10**5, 10**5)},
    ):
        with pytest.raises(CTDiffError) as info:
            prepare_dataset(tmp_path / "missing", tmp_path / "o", progress=False, **kwargs)
        assert "\n" not in str(info.value)
