"""Output folders (ctdiff/outputs.py) and the failure modes of issue 17: --force never touches an
input or a foreign folder, batches appear whole or not at all, corrupt data is an error, one bad
case is skipped and listed, unexpected errors are one line."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctdiff.data.io import find_cases, read_volume, write_nifti
from ctdiff.data.phantom import write_cohort
from ctdiff.data.volume import Volume
from ctdiff.errors import ConfigError, InputError, OverwriteError
from ctdiff.outputs import INCOMPLETE, check_distinct_inputs, check_no_overlap, check_output, staged_output
from tests.corpus.bad_inputs import _dicom, gz_crc_flipped, gz_data_byte_flipped


# ------------------------------------------------------------------------------ overlap
def test_overlap_equal_containing_inside_and_distinct(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for out, word in ((data, "is"), (tmp_path, "contains"), (data / "sub" / "out", "is inside")):
        with pytest.raises(ConfigError, match=f"--out {out} {word} the input --data"):
            check_no_overlap(out, {"--data": data})
    check_no_overlap(tmp_path / "data2", {"--data": data})  # a sibling with a common prefix is fine
    # through a symbolic link: the resolved paths are compared
    link = tmp_path / "link"
    link.symlink_to(data)
    with pytest.raises(ConfigError, match="is the input"):
        check_no_overlap(link, {"--data": data})
    with pytest.raises(ConfigError, match="give two different folders"):
        check_distinct_inputs({"--real": data, "--generated": link})
    check_distinct_inputs({"--real": data, "--generated": tmp_path / "data2", "--train": None})
    # the input of sample is the checkpoint file: samples inside the run dir are fine, the run dir is not
    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    check_no_overlap(tmp_path / "run" / "samples", {"--checkpoint": ckpt})
    with pytest.raises(ConfigError, match="contains the input --checkpoint"):
        check_no_overlap(tmp_path / "run", {"--checkpoint": ckpt})


def test_force_replaces_only_the_commands_own_output(tmp_path):
    cohort = tmp_path / "c"
    write_cohort(cohort, n=1, shape=(8, 8, 4), progress=False)
    with pytest.raises(OverwriteError, match="pass --force"):
        check_output(cohort, command="phantom", force=False)
    assert check_output(cohort, command="phantom", force=True) == cohort
    # a phantom cohort is not a prepared dataset, a report or a run dir
    for command in ("prepare", "sample", "report", "train"):
        with pytest.raises(OverwriteError, match="not a"):
            check_output(cohort, command=command, force=True)
    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("years of work")
    with pytest.raises(OverwriteError, match="not a phantom cohort"):
        write_cohort(foreign, n=1, shape=(8, 8, 4), force=True, progress=False)
    assert (foreign / "thesis.docx").read_text() == "years of work"
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", command="report", force=False).name == "empty"


def test_force_replaces_a_demo_workspace_or_only_ctdiff_caches_never_a_users_files(tmp_path):
    ws = tmp_path / "ws"
    (ws / "review-cache" / "abc").mkdir(parents=True)
    (ws / ".cache").mkdir()
    assert check_output(ws, command="demo", force=True) == ws  # nothing but ctdiff's caches
    (ws / "notes.txt").write_text("mine")
    with pytest.raises(OverwriteError, match="not a demo workspace"):
        check_output(ws, command="demo", force=True)
    (ws / ".building").write_text("")  # an in-place build of an older version that did not finish
    assert check_output(ws, command="demo", force=True) == ws
    done = tmp_path / "done"
    done.mkdir()
    (done / "workspace.json").write_text('{"name": "demo", "complete": true, "demo_reader_code": "demo-reader"}')
    assert check_output(done, command="demo", force=True) == done
    with pytest.raises(OverwriteError, match="pass --force"):
        check_output(done, command="demo", force=False)
    (done / "workspace.json").write_text('{"name": "prostate-2023", "complete": true}')  # a user's workspace
    with pytest.raises(OverwriteError, match="not a demo workspace"):
        check_output(done, command="demo", force=True)


def test_force_does_not_take_another_projects_run_for_ours(tmp_path):
    """A config.yaml with checkpoints/ (another trainer's run), or a lone autoencoder.pt, is not ours."""
    import ctdiff.model.autoencoder  # noqa: F401  (registers train-autoencoder's completion mark)

    other = tmp_path / "lightning-run"
    (other / "checkpoints").mkdir(parents=True)
    (other / "config.yaml").write_text("trainer: {max_epochs: 10}\n")
    (other / "checkpoints" / "last.pt").write_bytes(b"their weights")
    with pytest.raises(OverwriteError, match="not a run dir"):
        check_output(other, command="train", force=True)
    (other / "split.json").write_text('{"seed": 0, "train": ["a.nii.gz"], "val": []}')  # as train writes it
    assert check_output(other, command="train", force=True) == other

    ae = tmp_path / "ae"
    ae.mkdir()
    (ae / "autoencoder.pt").write_bytes(b"someone's model")
    (ae / "eval.json").write_text("{}")
    with pytest.raises(OverwriteError, match="not an autoencoder folder"):
        check_output(ae, command="train-autoencoder", force=True)
    (ae / "history.csv").write_text("step,l1,kl,gen_adv,disc\n1,0.1,0.2,0,0\n")  # as train-autoencoder writes it
    assert check_output(ae, command="train-autoencoder", force=True) == ae


def test_unwritable_parent_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="parent path is a file"):
        check_output(tmp_path / "file" / "out", command="phantom", force=False)
    # running as root ignores permission bits, so simulate a read-only parent through os.access
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(ConfigError, match="is not writable"):
        check_output(tmp_path / "out", command="phantom", force=False)


# ------------------------------------------------------------------------------ atomicity
def test_staged_output_is_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out, command="phantom", force=False) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.partial-")
            assert (tmp / INCOMPLETE).exists()
            (tmp / "case_000.nii.gz").write_text("half")
            raise RuntimeError("killed")
    assert sorted(os.listdir(tmp_path)) == []  # neither the output nor the temporary folder

    write_cohort(out, n=2, shape=(8, 8, 4), seed=0, progress=False)
    before = (out / "case_000.nii.gz").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with staged_output(out, command="phantom", force=True) as tmp:
            (tmp / "case_000.nii.gz").write_text("new")
            raise KeyboardInterrupt
    assert (out / "case_000.nii.gz").read_bytes() == before  # the old cohort is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not (out / INCOMPLETE).exists()


def test_stale_temporary_folders_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    """What a `kill -9` leaves (a hidden .NAME.partial-XXXX) is removed by the next run for the same
    output, but only when the process that wrote it is gone and ran on this machine."""
    import socket
    import subprocess
    import sys

    from ctdiff.outputs import remove_stale_partials

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, host = int(done.stdout), socket.gethostname()
    owners = {
        "dead": f"pid={dead_pid} host={host}",
        "live": f"pid={os.getpid()} host={host}",
        "other-host": f"pid={dead_pid} host=not-{host}",
        "no-owner": "",
    }
    for name, owner in owners.items():
        (tmp_path / f".out.partial-{name}").mkdir()
        (tmp_path / f".out.partial-{name}" / INCOMPLETE).write_text(f"'phantom' started writing this folder\n{owner}\n")
    (tmp_path / ".other.partial-dead").mkdir()  # another output's folder
    (tmp_path / ".other.partial-dead" / INCOMPLETE).write_text(owners["dead"])
    assert remove_stale_partials(tmp_path / "out") == [tmp_path / ".out.partial-dead"]
    kept = [".other.partial-dead", ".out.partial-live", ".out.partial-no-owner", ".out.partial-other-host"]
    assert sorted(p.name for p in tmp_path.iterdir()) == kept
    # staged_output does it before it starts, and its own marker names its process
    with staged_output(tmp_path / "out", command="phantom", force=False) as tmp:
        assert f"pid={os.getpid()} host={host}" in (tmp / INCOMPLETE).read_text()
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "out"])


def test_phantom_killed_half_way_leaves_no_cohort(tmp_path, monkeypatch):
    import ctdiff.data.phantom.cohort as phantom  # write_cohort calls make_phantom there

    real = phantom.make_phantom
    calls = []

    def dies_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(phantom, "make_phantom", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        write_cohort(tmp_path / "c", n=5, shape=(8, 8, 4), progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(phantom, "make_phantom", real)
    manifest = json.loads(write_cohort(tmp_path / "c", n=3, shape=(8, 8, 4), progress=False).read_text())
    assert [c["file"] for c in manifest["cases"]] == ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "case_000.nii.gz",
        "case_001.nii.gz",
        "case_002.nii.gz",
        "manifest.json",
    ]


def test_readers_refuse_an_unfinished_folder(tmp_path):
    from ctdiff.data.prepare import prepare_dataset

    cohort = tmp_path / "c"
    write_cohort(cohort, n=2, shape=(8, 8, 4), progress=False)
    assert len(find_cases(cohort)) == 2
    (cohort / INCOMPLETE).write_text("killed")
    with pytest.raises(InputError, match="did not finish"):
        find_cases(cohort)
    with pytest.raises(InputError, match="did not finish"):
        prepare_dataset(cohort, tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------------------ batches skip and list
def test_prepare_skips_a_singular_affine_and_lists_it(tmp_path):
    from ctdiff.data.prepare import prepare_dataset

    src = tmp_path / "src"
    write_cohort(src, n=2, shape=(8, 8, 4), progress=False)
    np.savez(src / "bad.npz", array=np.zeros((6, 6, 4), dtype=np.float32), affine=np.zeros((4, 4)))
    manifest = prepare_dataset(src, tmp_path / "p", progress=False)
    assert [c["file"] for c in manifest["cases"]] == ["case_000.nii.gz", "case_001.nii.gz"]
    assert manifest["skipped"] == [{"source": "bad.npz", "reason": "has an invalid (singular or non-finite) affine"}]


def test_prepare_lists_a_case_that_fails_while_processing(tmp_path, monkeypatch):
    import ctdiff.data.prepare as prepare

    src = tmp_path / "src"
    write_cohort(src, n=3, shape=(8, 8, 4), progress=False)
    real = prepare.process_volume

    def fails_once(volume, **kwargs):
        if volume.shape == (8, 8, 4) and not fails_once.done:
            fails_once.done = True
            raise np.linalg.LinAlgError("Singular matrix")
        return real(volume, **kwargs)

    fails_once.done = False
    monkeypatch.setattr(prepare, "process_volume", fails_once)
    manifest = prepare.prepare_dataset(src, tmp_path / "p", progress=False)
    assert manifest["n_cases"] == 2
    assert manifest["skipped"] == [{"source": "case_000.nii.gz", "reason": "LinAlgError: Singular matrix"}]


def test_unreadable_sub_folder_is_listed_not_dropped(tmp_path, monkeypatch):
    import ctdiff.data.io as io

    root = tmp_path / "r"
    write_cohort(root / "a", n=1, shape=(8, 8, 4), progress=False)
    (root / "locked").mkdir()
    real_walk = os.walk

    def walk(top, onerror=None, **kw):
        # root ignores permission bits: report the sub-folder the way os.walk does when it cannot list it
        for entry in real_walk(top, onerror=onerror, **kw):
            dirpath, dirnames, _ = entry
            if "locked" in dirnames:
                dirnames.remove("locked")
                onerror(PermissionError(13, "Permission denied", str(Path(dirpath) / "locked")))
            yield entry

    monkeypatch.setattr(io.os, "walk", walk)
    cases = find_cases(root)
    assert root / "locked" in cases and root / "a" / "case_0.nii.gz" not in cases
    assert [p.name for p in cases] == ["case_000.nii.gz", "locked"]


# ------------------------------------------------------------------------------ integrity
def test_gzip_crc_error_is_an_error_not_data(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    vol = Volume.from_spacing(np.arange(720, dtype=np.float32).reshape(12, 10, 6), (1.0, 1.0, 2.0))
    write_nifti(vol, good / "v.nii.gz")
    np.testing.assert_array_equal(read_volume(good / "v.nii.gz").array, vol.array)
    bad = gz_crc_flipped(tmp_path)
    # nibabel alone reads this file without complaint: ctdiff must not
    assert np.asarray(nib.load(str(bad)).dataobj).shape == (12, 10, 6)
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(bad.read_bytes())
    with pytest.raises(InputError, match="CRC check failed"):
        read_volume(bad)


def test_prepare_skips_and_lists_a_gzip_with_one_flipped_byte(tmp_path, capsys):
    """Issue 17 case 2: one flipped byte inside a .nii.gz made prepare exit 0 with 37 wrong voxels."""
    from ctdiff.cli import main

    src = tmp_path / "src"
    write_cohort(src, n=2, shape=(16, 16, 6), seed=0, progress=False)
    (tmp_path / "bad").mkdir()
    gz_data_byte_flipped(tmp_path / "bad").rename(src / "flipped.nii.gz")
    out = tmp_path / "out"
    assert main(["prepare", "--src", str(src), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_cases"] == 2 and [s["source"] for s in manifest["skipped"]] == ["flipped.nii.gz"]
    assert "CRC check failed" in manifest["skipped"][0]["reason"]
    assert "flipped.nii.gz" in err and "skipped 1 case" in err
    assert sorted(p.name for p in out.iterdir()) == ["case_000.nii.gz", "case_001.nii.gz", "manifest.json"]


def test_dicom_rescale_needs_tags_or_an_explicit_assumption(tmp_path):
    stored = np.arange(64, dtype=np.float32) * 30
    p = _dicom(tmp_path)
    with pytest.raises(InputError, match="--assume-hu"):
        read_volume(p)
    np.testing.assert_allclose(np.sort(read_volume(p, assume_hu="identity").array.ravel()), stored)
    np.testing.assert_allclose(np.sort(read_volume(p, assume_hu="offset-1024").array.ravel()), stored - 1024)
    p.unlink()
    p = _dicom(tmp_path, slope=2, intercept=-1000)
    np.testing.assert_allclose(np.sort(read_volume(p).array.ravel()), stored * 2 - 1000)
    p.unlink()
    p = _dicom(tmp_path, slope=0, intercept=-1024)
    with pytest.raises(InputError, match="RescaleSlope 0"):
        read_volume(p)


def test_prepare_cli_assume_hu(tmp_path, capsys):
    from ctdiff.cli import main

    src = tmp_path / "src"
    src.mkdir()
    _dicom(src)
    assert main(["prepare", "--src", str(src), "--out", str(tmp_path / "a")]) == 2
    assert "--assume-hu" in capsys.readouterr().err
    assert main(["prepare", "--src", str(src), "--out", str(tmp_path / "b"), "--assume-hu", "offset-1024"]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["options"]["assume_hu"] == "offset-1024"
    assert read_volume(tmp_path / "b" / "src.nii.gz").array.min() == -1024


def test_degenerate_scans_are_skipped_with_a_reason(tmp_path):
    from eval.report.cases import read_cohort

    folder = tmp_path / "g"
    write_cohort(folder, n=2, shape=(8, 8, 4), progress=False)
    write_nifti(Volume.from_spacing(np.full((8, 8, 4), -1000, np.float32), (1.0, 1.0, 1.0)), folder / "air.nii.gz")
    noisy_air = np.random.default_rng(0).normal(-1000, 20, (8, 8, 4)).astype(np.float32)
    write_nifti(Volume.from_spacing(noisy_air, (1.0, 1.0, 1.0)), folder / "noisy_air.nii.gz")
    good, bad = read_cohort(folder, "generated")
    assert [c.name for c in good] == ["case_000", "case_001"]
    reasons = {Path(b["file"]).name: b["reason"] for b in bad}
    assert reasons["air.nii.gz"].startswith("degenerate scan: every voxel is -1000 HU")
    assert reasons["noisy_air.nii.gz"].startswith("degenerate scan: no voxel above -500 HU")


# ------------------------------------------------------------------------------ top-level handler
def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(capsys):
    import types

    from ctdiff.cli import build_parser, run_parsed

    def run(args):
        raise RuntimeError("boom\nsecond line")

    module = types.SimpleNamespace(run=run)
    parser = build_parser(subcommands={})
    parser.set_defaults(_module=module)
    assert run_parsed(parser, []) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected RuntimeError: boom second line" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="boom"):
        run_parsed(parser, ["--debug"])
