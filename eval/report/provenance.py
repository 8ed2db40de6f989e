"""Which scans a report measured: a content hash of every input scan, written into report.json.

A report is a set of facts about particular scans. Folder and file names do not identify them
(a new Generate run writes a new ``case_000`` under the same name), so the report records the
SHA-256 of each scan's bytes (a DICOM series: of its files, in name order; a ``.gz`` file: of its
uncompressed bytes, so the gzip header's time stamp or a re-compression does not change it). The app shows a report
only next to the scans it measured, and pairs a generated scan with its nearest real scan by these
hashes, never by file name.

    report["provenance"] = {"hash": "sha256 of the file bytes (a DICOM folder: its files in name order)",
                            "scans": {"real": [{"file": ..., "sha256": ...}], "generated": [...], "train": [...]}}

and each ``per_case`` row gets ``sha256`` (and ``nearest_real_sha256`` where it names a nearest
real scan).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

HASH_NOTE = "sha256 of the scan's bytes, uncompressed for .gz files (a DICOM folder: its files in name order)"
_CHUNK = 1 << 20


def scan_hash(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a scan: a file's bytes (uncompressed for .gz), or a folder's files (sorted by name) with their names.

    Raises OSError when the scan cannot be read.
    """
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        opener = gzip.open if f.name.endswith(".gz") else open
        try:
            with opener(f, "rb") as fh:
                for block in iter(lambda: fh.read(_CHUNK), b""):
                    h.update(block)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise OSError(f"corrupt gzip data ({type(exc).__name__})") from None
    return h.hexdigest()


def scan_hashes(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """{str(path): sha256} for readable scans (an unreadable one is left out)."""
    out = {}
    for p in paths:
        try:
            out[str(p)] = scan_hash(p)
        except OSError:
            continue
    return out


def add_provenance(report: dict[str, Any], cohorts: Mapping[str, Iterable[Any]]) -> dict[str, Any]:
    """Add ``provenance`` and per-case hashes to ``report`` (in place; returned for chaining).

    ``cohorts``: cohort name -> cases with a ``path`` (``eval.report.cases.Case``).
    """
    scans: dict[str, list[dict[str, str]]] = {}
    by_file: dict[str, str] = {}
    for cohort, cases in cohorts.items():
        rows = []
        for c in cases:
            digest = scan_hash(c.path)
            by_file[str(c.path)] = digest
            rows.append({"file": str(c.path), "sha256": digest})
        scans[cohort] = rows
    report["provenance"] = {"hash": HASH_NOTE, "scans": scans}
    for row in report.get("per_case") or []:
        if row.get("file") in by_file:
            row["sha256"] = by_file[row["file"]]
        near = row.get("nearest_real_file")
        if near and str(near) in by_file:
            row["nearest_real_sha256"] = by_file[str(near)]
    return report


def report_hashes(report: Mapping[str, Any], cohort: str) -> set[str] | None:
    """The hashes a report recorded for a cohort, or None for a report without provenance."""
    prov = report.get("provenance")
    if not isinstance(prov, Mapping) or not isinstance(prov.get("scans"), Mapping):
        return None
    rows = prov["scans"].get(cohort)
    if rows is None:
        return None
    return {r["sha256"] for r in rows if isinstance(r, Mapping) and r.get("sha256")}


def binding(report: Mapping[str, Any], current: Mapping[str, set[str]]) -> dict[str, Any]:
    """Does the report describe the scans now selected? ``current``: cohort -> hashes of its scans.

    Returns ``{"status": "same" | "other" | "unknown", "message": str}``: "unknown" for a report
    that records no hashes, "other" when any selected cohort's scans differ from those measured.
    """
    differ = []
    for cohort, hashes in current.items():
        recorded = report_hashes(report, cohort)
        if recorded is None:
            return {
                "status": "unknown",
                "message": "This report does not record which scans it measured "
                "(made before reports carried scan hashes); recompute it to be sure it is for these scans.",
            }
        if set(hashes) != recorded:
            both = len(set(hashes) & recorded)
            differ.append(
                f"{cohort}: {both} of the {len(hashes)} selected scans were measured "
                f"(the report measured {len(recorded)})"
            )
    if differ:
        return {"status": "other", "message": "This report is for other scans: " + "; ".join(differ) + "."}
    return {"status": "same", "message": "This report measured exactly the selected scans."}
