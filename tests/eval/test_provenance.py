"""eval.report.provenance: content hashes of input scans and whether a report describes given scans."""

from __future__ import annotations

import gzip
import hashlib
from types import SimpleNamespace

import pytest

from eval.report.provenance import add_provenance, binding, report_hashes, scan_hash, scan_hashes


def test_scan_hash_is_sha256_of_the_content_not_the_name_or_gzip_header(tmp_path):
    a = tmp_path / "a.nii"
    a.write_bytes(b"voxels-1")
    assert scan_hash(a) == hashlib.sha256(b"voxels-1").hexdigest()
    renamed = tmp_path / "renamed.nii"
    renamed.write_bytes(b"voxels-1")
    assert scan_hash(renamed) == scan_hash(a)
    # the same voxels gzipped at different times / levels: one hash (the uncompressed bytes)
    g1, g2 = tmp_path / "x.nii.gz", tmp_path / "y.nii.gz"
    g1.write_bytes(gzip.compress(b"voxels-1", compresslevel=1, mtime=1))
    g2.write_bytes(gzip.compress(b"voxels-1", compresslevel=9, mtime=999))
    assert g1.read_bytes() != g2.read_bytes() and scan_hash(g1) == scan_hash(g2) == scan_hash(a)
    (tmp_path / "bad.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(OSError, match="corrupt gzip"):
        scan_hash(tmp_path / "bad.nii.gz")
    assert scan_hashes([a, tmp_path / "missing.nii", tmp_path / "bad.nii.gz"]) == {str(a): scan_hash(a)}


def test_dicom_folder_hash_covers_every_file_and_its_name(tmp_path):
    d = tmp_path / "series"
    d.mkdir()
    (d / "1.dcm").write_bytes(b"one")
    (d / "2.dcm").write_bytes(b"two")
    first = scan_hash(d)
    (d / "2.dcm").write_bytes(b"TWO")
    assert scan_hash(d) != first
    (d / "2.dcm").write_bytes(b"two")
    assert scan_hash(d) == first
    (d / "2.dcm").rename(d / "3.dcm")
    assert scan_hash(d) != first


def test_add_provenance_and_binding(tmp_path):
    files = {}
    for name, content in (("r1", b"real-1"), ("r2", b"real-2"), ("g1", b"gen-1")):
        files[name] = tmp_path / f"{name}.nii"
        files[name].write_bytes(content)
    report = {
        "per_case": [
            {"cohort": "generated", "file": str(files["g1"]), "nearest_real_file": str(files["r2"])},
            {"cohort": "real", "file": str(files["r1"])},
        ]
    }
    add_provenance(
        report,
        {
            "real": [SimpleNamespace(path=files["r1"]), SimpleNamespace(path=files["r2"])],
            "generated": [SimpleNamespace(path=files["g1"])],
            "train": [],
        },
    )
    h = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()}
    assert report["provenance"]["scans"]["real"] == [
        {"file": str(files["r1"]), "sha256": h["r1"]},
        {"file": str(files["r2"]), "sha256": h["r2"]},
    ]
    assert report["per_case"][0]["sha256"] == h["g1"] and report["per_case"][0]["nearest_real_sha256"] == h["r2"]
    assert report_hashes(report, "train") == set() and report_hashes({}, "real") is None

    same = binding(report, {"real": {h["r1"], h["r2"]}, "generated": {h["g1"]}})
    assert same["status"] == "same"
    other = binding(report, {"real": {h["r1"], h["r2"]}, "generated": {"a-new-case"}})
    assert other["status"] == "other"
    assert other["message"] == (
        "This report is for other scans: generated: 0 of the 1 selected scans were measured (the report measured 1)."
    )
    subset = binding(report, {"real": {h["r1"]}})
    assert subset["status"] == "other" and "real: 1 of the 1 selected scans" in subset["message"]
    assert binding({"metrics": {}}, {"real": {h["r1"]}})["status"] == "unknown"
