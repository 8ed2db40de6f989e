"""The corpus of bad inputs: every file or command line that once gave a traceback, a silently
wrong result or a partial output (issue 17), as a small generator plus what must happen instead.

Nothing binary is committed: each entry builds its file under a pytest temp folder. Add an entry
whenever a new bad input is found; ``tests/test_corpus.py`` runs every one.

- ``READER_CORPUS``: ``name -> (build(folder) -> path, expected words of the one-line InputError)``.
- ``CLI_CORPUS``: ``name -> (argv template, expected exit code, expected words on stderr)``; ``{X}``
  placeholders are filled from the fixtures of ``tests/test_corpus.py`` (``{real}``, ``{gen}``,
  ``{tmp}``, ``{run}``, ...).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np


# ------------------------------------------------------------------------------- files
def _nifti(folder: Path, name: str = "v.nii.gz", array=None, affine=None) -> Path:
    if array is None:
        array = np.random.default_rng(0).integers(-1000, 1000, size=(12, 10, 6)).astype(np.int16)
    path = folder / name
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.9, 2.5, 1.0]) if affine is None else affine), str(path))
    return path


def _flip(p: Path, index: Callable[[int], int], bits: int) -> Path:
    """XOR ``bits`` into the byte at ``index(file size)`` of ``p``, in place."""
    data = bytearray(p.read_bytes())
    data[index(len(data))] ^= bits
    p.write_bytes(bytes(data))
    return p


def _truncate(p: Path, keep: Callable[[int], int]) -> Path:
    """Keep the first ``keep(file size)`` bytes of ``p``."""
    data = p.read_bytes()
    p.write_bytes(data[: keep(len(data))])
    return p


def gz_crc_flipped(folder: Path) -> Path:
    """A .nii.gz whose CRC-32 trailer is wrong: nibabel alone would read it as data."""
    return _flip(_nifti(folder), lambda n: n - 8, 0xFF)


def gz_length_wrong(folder: Path) -> Path:
    """A .nii.gz whose ISIZE (uncompressed length) trailer is wrong."""
    return _flip(_nifti(folder), lambda n: n - 1, 0x01)


def gz_data_byte_flipped(folder: Path) -> Path:
    """One flipped byte inside the deflate stream of the voxels (the case of issue 17)."""
    arr = np.random.default_rng(1).integers(-1000, 1000, size=(24, 20, 8)).astype(np.int16)
    raw = _nifti(folder, "raw.nii", arr).read_bytes()
    comp = bytearray(gzip.compress(raw, mtime=0))
    comp[len(comp) * 2 // 3] ^= 0x10
    p = folder / "v.nii.gz"
    p.write_bytes(bytes(comp))
    (folder / "raw.nii").unlink()
    return p


def gz_truncated(folder: Path) -> Path:
    return _truncate(_nifti(folder), lambda n: n // 2)


def nii_truncated(folder: Path) -> Path:
    return _truncate(_nifti(folder, "v.nii"), lambda n: n - 100)


def nii_huge_header(folder: Path) -> Path:
    """A NIfTI header claiming 100000^3 voxels on a file of a few hundred bytes (was a MemoryError)."""
    p = _nifti(folder, "v.nii")
    raw = bytearray(p.read_bytes())
    dims = np.frombuffer(bytes(raw[40:56]), dtype="<i2").copy()
    dims[1:4] = 30000
    raw[40:56] = dims.astype("<i2").tobytes()
    p.write_bytes(bytes(raw))
    return p


def nii_nan(folder: Path) -> Path:
    arr = np.zeros((8, 8, 4), dtype=np.float32)
    arr[1, 2, 3] = np.nan
    return _nifti(folder, "v.nii.gz", arr)


def nii_singular_affine(folder: Path) -> Path:
    """An sform whose z row is zero (nibabel refuses to write one, so the header bytes are patched)."""
    raw = bytearray(_nifti(folder, "raw.nii").read_bytes())
    raw[252:254] = np.int16(0).tobytes()  # qform_code: unknown, so the sform is the affine
    raw[254:256] = np.int16(1).tobytes()  # sform_code: scanner
    raw[312:328] = np.zeros(4, dtype="<f4").tobytes()  # srow_z
    (folder / "raw.nii").unlink()
    p = folder / "v.nii.gz"
    p.write_bytes(gzip.compress(bytes(raw)))
    return p


def nii_2d(folder: Path) -> Path:
    return _nifti(folder, "v.nii.gz", np.zeros((8, 8), dtype=np.int16))


def empty_file(folder: Path) -> Path:
    p = folder / "v.nii.gz"
    p.write_bytes(b"")
    return p


def random_bytes_nifti(folder: Path) -> Path:
    p = folder / "v.nii.gz"
    p.write_bytes(np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return p


def npy_huge_header(folder: Path) -> Path:
    """An .npy header claiming a 100000^3 array on a small file."""
    p = folder / "v.npy"
    np.save(p, np.zeros((4, 4, 4), dtype=np.float32))
    raw = p.read_bytes()
    header_len = int.from_bytes(raw[8:10], "little")
    header = raw[10 : 10 + header_len].decode("latin1").replace("(4, 4, 4)", "(100000, 100000, 100000)")
    header = header.rstrip("\n").rstrip(" ")
    header = header + " " * (header_len - len(header) - 1) + "\n"
    p.write_bytes(raw[:10] + header.encode("latin1") + raw[10 + header_len :])
    return p


def npz_singular_affine(folder: Path) -> Path:
    """The prepare batch crasher of issue 17: an array with a singular affine."""
    p = folder / "v.npz"
    np.savez(p, array=np.zeros((6, 6, 4), dtype=np.float32), affine=np.zeros((4, 4)))
    return p


def npz_corrupt(folder: Path) -> Path:
    p = folder / "v.npz"
    np.savez_compressed(
        p, array=np.random.default_rng(3).normal(size=(16, 16, 8)).astype(np.float32), spacing=np.array([1.0, 1.0, 1.0])
    )
    return _flip(p, lambda n: n // 2, 0xFF)


def _dicom(folder: Path, slope=None, intercept=None) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    p = folder / "ct.dcm"
    ds = FileDataset(str(p), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = generate_uid()
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = 8, 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.PixelData = (np.arange(64, dtype=np.uint16) * 30).tobytes()
    ds.save_as(str(p), enforce_file_format=True)
    return p


def dicom_no_rescale(folder: Path) -> Path:
    """CT without RescaleSlope/RescaleIntercept (was silently read as HU)."""
    return _dicom(folder)


def dicom_slope_zero(folder: Path) -> Path:
    """CT with RescaleSlope 0 (was treated as 1)."""
    return _dicom(folder, slope=0, intercept=-1024)


def symlink_loop(folder: Path) -> Path:
    a, b = folder / "a.nii.gz", folder / "b.nii.gz"
    os.symlink(b, a)
    os.symlink(a, b)
    return a


def unfinished_cohort(folder: Path) -> Path:
    """A phantom folder a killed run left: scans and the ctdiff 'did not finish' marker."""
    cohort = folder / "cohort"
    cohort.mkdir()
    _nifti(cohort, "case_000.nii.gz")
    (cohort / ".ctdiff-incomplete").write_text("phantom started writing this folder and did not finish\n")
    return cohort


READER_CORPUS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "gz_crc_flipped": (gz_crc_flipped, "corrupt compressed NIfTI"),
    "gz_length_wrong": (gz_length_wrong, "corrupt compressed NIfTI"),
    "gz_data_byte_flipped": (gz_data_byte_flipped, "compressed NIfTI"),
    "gz_truncated": (gz_truncated, "compressed NIfTI"),
    "nii_truncated": (nii_truncated, "truncated NIfTI"),
    "nii_huge_header": (nii_huge_header, "header claims"),
    "nii_nan": (nii_nan, "NaN/inf"),
    "nii_singular_affine": (nii_singular_affine, "singular"),
    "nii_2d": (nii_2d, "2D"),
    "empty_file": (empty_file, "empty"),
    "random_bytes_nifti": (random_bytes_nifti, "NIfTI"),
    "npy_huge_header": (npy_huge_header, "header claims"),
    "npz_singular_affine": (npz_singular_affine, "singular"),
    "npz_corrupt": (npz_corrupt, "cannot read array file"),
    "dicom_no_rescale": (dicom_no_rescale, "no RescaleSlope/RescaleIntercept"),
    "dicom_slope_zero": (dicom_slope_zero, "RescaleSlope 0"),
    "symlink_loop": (symlink_loop, "symlink loop"),
    "unfinished_cohort": (unfinished_cohort, "did not finish"),
}


# ----------------------------------------------------------------------------- commands
# one argv builder per command (its fixture inputs filled in); entries add the option under test
def _report(out: str, *extra: str, generated: str = "{gen}") -> list[str]:
    return ["-m", "eval", "report", "--real", "{real}", "--generated", generated, "--out", out, *extra]


def _sample(out: str, *extra: str, source: tuple[str, str] = ("--run", "{run}")) -> list[str]:
    return ["-m", "ctdiff", "sample", *source, "--out", out, *extra]


def _train(out: str, *extra: str) -> list[str]:
    return ["-m", "ctdiff", "train", "--config", "configs/demo.yaml", "--data", "{real}", "--out", out, *extra]


def _prepare(out: str, *extra: str) -> list[str]:
    return ["-m", "ctdiff", "prepare", "--src", "{real}", "--out", out, *extra]


def _phantom(out: str, *extra: str) -> list[str]:
    return ["-m", "ctdiff", "phantom", "--out", out, *extra]


# command lines: (argv template, exit code, words in the one-line error)
CLI_CORPUS: dict[str, tuple[list[str], int, str]] = {
    # --force deleting inputs (data loss in issue 17)
    "report_out_is_real": (_report("{real}", "--force"), 2, "is the input --real"),
    "report_out_contains_generated": (_report("{tmp}", "--force"), 2, "contains the input --real"),
    "sample_out_is_run": (_sample("{run}", "--force"), 2, "contains the input"),
    "train_out_is_data": (_train("{real}", "--force"), 2, "is the input --data"),
    "prepare_out_is_src": (_prepare("{real}", "--force"), 2, "is the input --src"),
    "force_on_foreign_folder": (
        _phantom("{foreign}", "--n", "1", "--shape", "8", "8", "4", "--force"),
        2,
        "not a phantom cohort",
    ),
    "train_force_on_foreign_folder": (_train("{foreign}", "--force"), 2, "not a run dir"),
    "sample_force_on_foreign_folder": (_sample("{foreign}", "--force"), 2, "not a samples folder"),
    "report_force_on_foreign_folder": (_report("{foreign}", "--force"), 2, "not a report folder"),
    "report_force_on_other_commands_output": (_report("{phantom_out}", "--force"), 2, "not a report folder"),
    "train_out_foreign_without_force": (  # refused without suggesting a --force that would be refused too
        ["-m", "ctdiff", "train", "--config", "configs/demo.yaml", "--data", "{real}", "--out", "{foreign}"],
        2,
        "is not a run dir",
    ),
    # a run stopped before its first checkpoint
    "sample_run_without_checkpoint": (
        ["-m", "ctdiff", "sample", "--run", "{early_run}", "--out", "{new}"],
        2,
        "holds no checkpoints/best.pt or checkpoints/last.pt yet",
    ),
    "train_resume_without_checkpoint": (
        ["-m", "ctdiff", "train", "--out", "{early_run}", "--resume"],
        2,
        "has no checkpoints/last.pt to resume from",
    ),
    # commands outside the list that also take --out and --force
    "autoencoder_out_is_data": (
        ["-m", "ctdiff", "train-autoencoder", "--data", "{real}", "--out", "{real}", "--force"],
        2,
        "is the input --data",
    ),
    "autoencoder_force_on_foreign_folder": (
        ["-m", "ctdiff", "train-autoencoder", "--data", "{real}", "--out", "{foreign}", "--force"],
        2,
        "not an autoencoder folder",
    ),
    "realct_force_on_foreign_folder": (
        ["-m", "ctdiff", "real-ct", "--out", "{foreign}", "--force", "--offline"],
        2,
        "not a real-CT folder",
    ),
    "fit_noise_zero_byte_model": (
        ["-m", "ctdiff", "fit-noise", "--model", "{empty_ckpt}", "--data", "{real}", "--out", "{new}"],
        2,
        "not a readable model file",
    ),
    "fit_noise_text_model": (
        ["-m", "ctdiff", "fit-noise", "--model", "{text_file}", "--data", "{real}", "--out", "{new}"],
        2,
        "not a readable model file",
    ),
    "fit_noise_pixel_checkpoint": (
        ["-m", "ctdiff", "fit-noise", "--model", "{run}/checkpoints/best.pt", "--data", "{real}", "--out", "{new}"],
        2,
        "pixel-space checkpoint has no autoencoder",
    ),
    "fit_noise_out_is_model": (
        ["-m", "ctdiff", "fit-noise", "--model", "{nan_ckpt}", "--data", "{real}", "--out", "{nan_ckpt}", "--force"],
        2,
        "is the input --model",
    ),
    "fit_noise_threads_negative": (
        ["-m", "ctdiff", "fit-noise", "--model", "{nan_ckpt}", "--data", "{real}", "--out", "{new}", "--threads", "-2"],
        2,
        "--threads must be >= 1",
    ),
    "tune_decoder_pixel_checkpoint": (
        ["-m", "ctdiff", "tune-decoder", "--model", "{run}/checkpoints/best.pt", "--data", "{real}", "--out", "{new}"],
        2,
        "pixel-space checkpoint has no autoencoder",
    ),
    "tune_decoder_text_model": (
        ["-m", "ctdiff", "tune-decoder", "--model", "{text_file}", "--data", "{real}", "--out", "{new}"],
        2,
        "not a readable model file",
    ),
    "tune_decoder_lr_infinite": (
        ["-m", "ctdiff", "tune-decoder", "--model", "{nan_ckpt}", "--data", "{real}", "--out", "{new}", "--lr", "inf"],
        2,
        "--lr must be a finite number",
    ),
    "selftest_out_is_real": (
        ["-m", "eval", "selftest", "--real", "{real}", "--out", "{real}", "--force"],
        2,
        "is the input --real",
    ),
    "selftest_force_on_foreign_folder": (
        ["-m", "eval", "selftest", "--real", "{real}", "--out", "{foreign}", "--force"],
        2,
        "not a selftest folder",
    ),
    "autoencoder_threads_negative": (
        ["-m", "ctdiff", "train-autoencoder", "--data", "{real}", "--out", "{new}", "--threads", "-2"],
        2,
        "--threads must be >= 1",
    ),
    "autoencoder_seed_negative": (
        ["-m", "ctdiff", "train-autoencoder", "--data", "{real}", "--out", "{new}", "--set", "seed=-1"],
        2,
        "seed must be in [0, 4294967295]",
    ),
    "autoencoder_unknown_device": (
        ["-m", "ctdiff", "train-autoencoder", "--data", "{real}", "--out", "{new}", "--device", "tpu9"],
        2,
        "--device",
    ),
    "selftest_seed_negative": (
        ["-m", "eval", "selftest", "--real", "{real}", "--out", "{new}", "--seed", "-1"],
        2,
        "--seed must be >= 0",
    ),
    "selftest_metrics_empty": (
        ["-m", "eval", "selftest", "--real", "{real}", "--out", "{new}", "--metrics", ""],
        2,
        "--metrics is empty",
    ),
    "selftest_degradations_empty": (  # was read as "every degradation"
        ["-m", "eval", "selftest", "--real", "{real}", "--out", "{new}", "--degradations", ","],
        2,
        "--degradations is empty",
    ),
    # bad values
    "phantom_noise_nan": (_phantom("{new}", "--noise-hu", "nan"), 2, "--noise-hu must be a finite"),
    "phantom_fov_nan": (_phantom("{new}", "--fov", "nan", "1", "1"), 2, "--fov must be a finite"),
    "phantom_huge_shape": (_phantom("{new}", "--shape", "100000", "100000", "100000"), 2, "--shape"),
    "phantom_n_zero": (_phantom("{new}", "--n", "0"), 2, "--n must be >= 1"),
    "phantom_huge_seed": (_phantom("{new}", "--seed", str(2**70)), 2, "--seed must be <="),
    "prepare_crop_margin_inf": (_prepare("{new}", "--crop-margin", "inf"), 2, "--crop-margin must be a finite"),
    "sample_steps_zero": (_sample("{new}", "--steps", "0"), 2, "--steps must be >= 1"),
    "sample_steps_above_schedule": (_sample("{new}", "--steps", "101"), 2, "--steps must be <= 100"),
    "sample_unknown_device": (_sample("{new}", "--device", "tpu9"), 2, "--device"),
    "sample_missing_cuda_device": (_sample("{new}", "--device", "cuda:99"), 2, "--device cuda:99"),
    "sample_zero_byte_checkpoint": (
        _sample("{new}", source=("--checkpoint", "{empty_ckpt}")),
        2,
        "not a readable checkpoint",
    ),
    "sample_incomplete_checkpoint": (
        _sample("{new}", source=("--checkpoint", "{incomplete_ckpt}")),
        2,
        "incomplete checkpoint",
    ),
    "sample_nan_weights": (_sample("{new}", "--n", "1", source=("--checkpoint", "{nan_ckpt}")), 2, "non-finite"),
    "report_bootstrap_negative": (_report("{new}", "--bootstrap", "-1"), 2, "--bootstrap must be >= 0"),
    "report_metrics_empty": (_report("{new}", "--metrics", ""), 2, "--metrics is empty"),
    "report_generated_is_real": (_report("{new}", generated="{real}"), 2, "give two different folders"),
    "report_inception_text_file": (
        _report("{new}", "--metrics", "fid_inception_2d", "--inception-weights", "{text_file}", "--bootstrap", "0"),
        2,
        "not a readable InceptionV3 weights file",
    ),
    "out_parent_is_file": (_phantom("{text_file}/sub", "--n", "1"), 2, "parent path is a file"),
}
