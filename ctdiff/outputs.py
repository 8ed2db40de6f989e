"""Output folders: never overlapping an input, replaced only when ours, written whole or not at all.

Every command with ``--out`` goes through this module (one owner for the rules):

- :func:`check_output` refuses, in one line and before anything is touched, an output folder that
  is, contains or lies inside one of the command's inputs (``--force`` never deletes an input),
  an output whose parent cannot be written, and an existing non-empty folder: without ``--force``
  always; with ``--force`` unless the same command wrote it (its completion mark: the manifest of
  a cohort, ``report.json`` of a report, ...). ``--force`` therefore never empties a folder of
  someone else's files.
- :func:`staged_output` writes a batch into a temporary hidden sibling folder
  (``.NAME.partial-XXXX``, holding an :data:`INCOMPLETE` marker) and renames it onto the final
  name only when everything, completion mark last, is written. A crash, Ctrl-C or one
  exception leaves the old folder (or no folder) in place, never half a cohort.
- :func:`check_finished` lets readers refuse a folder that a ctdiff command started and did not
  finish (an :data:`INCOMPLETE` or demo ``.building`` marker inside).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ctdiff.errors import ConfigError, InputError, OverwriteError

INCOMPLETE = ".ctdiff-incomplete"
# the "started, not finished" marker of demo workspaces built in place (before they were staged)
UNFINISHED_MARKERS = (INCOMPLETE, ".building")
PARTIAL_TAG = ".partial-"
# folders ctdiff writes into a demo workspace as caches (rebuildable, never a user's data)
DEMO_CACHES = ("review-cache", ".cache")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _manifest_kind(kind: str) -> Callable[[Path], bool]:
    return lambda folder: _read_json(folder / "manifest.json").get("kind") == kind


def _is_report(folder: Path) -> bool:
    report = _read_json(folder / "report.json")
    return "metrics" in report and "inputs" in report


def _is_run_dir(folder: Path) -> bool:
    # train writes config.yaml and split.json ({"seed", "train": [...], "val": [...], ...}) before its
    # first step; a config.yaml and a checkpoints/ folder alone may be another project's run
    split = _read_json(folder / "split.json")
    return (
        (folder / "config.yaml").is_file()
        and isinstance(split.get("train"), list)
        and isinstance(split.get("val"), list)
    )


def is_demo_build(folder: str | os.PathLike) -> bool:
    """A demo build, finished or not: the demo's own ``workspace.json`` (name "demo", with its reader
    code; a user's free-form workspace.json is not), or the ``.building`` marker of an in-place build."""
    folder = Path(folder)
    info = _read_json(folder / "workspace.json")
    return (info.get("name") == "demo" and "demo_reader_code" in info) or (folder / ".building").is_file()


def _is_demo_workspace(folder: Path) -> bool:
    # a (finished or unfinished) demo build, or a folder that holds nothing but ctdiff's caches
    if is_demo_build(folder):
        return True
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return False
    return bool(names) and all(n in DEMO_CACHES for n in names)


# command -> "this folder is a finished (or our own unfinished) output of the command"
WRITTEN_BY: dict[str, Callable[[Path], bool]] = {
    "phantom": _manifest_kind("ctdiff phantom cohort"),
    "prepare": _manifest_kind("ctdiff prepared dataset"),
    "sample": _manifest_kind("ctdiff samples"),
    "report": _is_report,
    "train": _is_run_dir,
    "demo": _is_demo_workspace,
}


WHAT = {
    "phantom": "a phantom cohort",
    "prepare": "a prepared dataset",
    "sample": "a samples folder",
    "report": "a report folder",
    "train": "a run dir",
    "demo": "a demo workspace",
}


def register_output(command: str, what: str, written_by: Callable[[Path], bool]) -> None:
    """Add a command whose module owns its output's file names (``train-autoencoder``, ``real-ct``,
    eval's ``selftest``): ``written_by(folder)`` recognises its completion mark, ``what`` names it."""
    WRITTEN_BY[command] = written_by
    WHAT[command] = what


def resolved(path: str | os.PathLike, what: str = "path") -> Path:
    """``Path.resolve`` with a one-line error for a symlink loop (RuntimeError before Python 3.13)."""
    try:
        return Path(path).expanduser().resolve(strict=False)
    except (RuntimeError, OSError) as exc:
        raise InputError(f"{what} cannot be resolved (symlink loop?): {type(exc).__name__}", path) from None


def _relation(out: Path, inp: Path) -> str | None:
    if out == inp:
        return "is"
    if out in inp.parents:
        return "contains"
    if inp in out.parents:
        return "is inside"
    return None


def check_no_overlap(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """ConfigError when ``out`` is, contains or lies inside one of ``inputs`` ({option: path})."""
    o = resolved(out, "--out")
    for option, path in inputs.items():
        if path is None:
            continue
        rel = _relation(o, resolved(path, option))
        if rel is not None:
            raise ConfigError(
                f"--out {out} {rel} the input {option} {path}; choose an output folder outside the inputs "
                "(--force never replaces an input)"
            )


def check_distinct_inputs(inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """ConfigError when two input folders are the same or one lies inside the other (e.g. --generated == --real)."""
    items = [(k, v, resolved(v, k)) for k, v in inputs.items() if v is not None]
    for i, (k1, v1, r1) in enumerate(items):
        for k2, v2, r2 in items[i + 1 :]:
            rel = _relation(r1, r2)
            if rel is not None:
                raise ConfigError(f"{k1} {v1} {rel} {k2} {v2}; give two different folders")


def _writable_parent(out: Path) -> None:
    parent = out.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError("cannot create the output folder: a parent path is a file", out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the output folder: {parent} is not writable", out)


def check_output(
    out: str | os.PathLike,
    *,
    command: str,
    force: bool,
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> Path:
    """Validate ``out`` for ``command`` before anything is read, written or deleted; return it.

    Raises ConfigError (overlap with an input, unwritable parent), OverwriteError (non-empty folder
    without ``force``, or with ``force`` but not written by ``command``).
    """
    if command not in WRITTEN_BY:
        raise ValueError(f"unknown command {command!r}")
    out_path = Path(out)
    check_no_overlap(out_path, inputs or {})
    if out_path.is_symlink() and not out_path.exists():
        raise ConfigError("--out is a broken symbolic link", out_path)
    if out_path.exists():
        if not out_path.is_dir():
            raise OverwriteError("exists and is not a folder", out_path)
        try:
            non_empty = any(out_path.iterdir())
        except OSError as exc:
            raise ConfigError(f"cannot list the output folder ({type(exc).__name__})", out_path) from None
        if non_empty:
            ours = WRITTEN_BY[command](out_path)
            if not force and ours:
                raise OverwriteError("output folder exists and is not empty; pass --force to replace it", out_path)
            if not ours:
                # with or without --force: do not suggest a --force that would be refused
                raise OverwriteError(
                    f"exists and is not {WHAT[command]} (no completion mark such as its manifest); --force "
                    "replaces only that, so choose another --out or empty the folder yourself",
                    out_path,
                )
    _writable_parent(out_path)
    return out_path


def _public_mode(path: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)


@contextlib.contextmanager
def staged_output(
    out: str | os.PathLike,
    *,
    command: str,
    force: bool,
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> Iterator[Path]:
    """Check ``out`` (:func:`check_output`), yield a temporary sibling folder to write into, and on
    success replace ``out`` with it in one rename. On any exception the temporary folder is removed
    and ``out`` is left as it was."""
    final = check_output(out, command=command, force=force, inputs=inputs)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{PARTIAL_TAG}", dir=final.parent))
    except OSError as exc:
        raise ConfigError(
            f"cannot create the output folder ({type(exc).__name__}: {exc.strerror or exc})", final
        ) from None
    try:
        (tmp / INCOMPLETE).write_text(
            f"'{command}' started writing this folder and did not finish; delete it\n{_OWNER_FORMAT.format(*_owner())}\n"
        )
        yield tmp
        (tmp / INCOMPLETE).unlink()
        _public_mode(tmp)
        _commit(tmp, final, command, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_OWNER_FORMAT = "pid={} host={}"
_OWNER_RE = re.compile(r"^pid=(\d+) host=(\S+)$", re.MULTILINE)


def _owner() -> tuple[int, str]:
    return os.getpid(), socket.gethostname()


def _process_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) is not a harmless probe on Windows: never call a folder stale there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def remove_stale_partials(final: str | os.PathLike) -> list[Path]:
    """Delete the temporary folders of earlier runs for ``final`` whose process is gone (a hard kill,
    a power loss); return them. Only a folder that holds our marker naming a process of this machine
    that no longer exists is removed: a live run's folder, or one from another machine, stays."""
    final = Path(final)
    removed = []
    host = socket.gethostname()
    for folder in final.parent.glob(f".{glob.escape(final.name)}{PARTIAL_TAG}*"):
        try:
            found = _OWNER_RE.search((folder / INCOMPLETE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        if found is None or found.group(2) != host or _process_alive(int(found.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _commit(tmp: Path, final: Path, command: str, force: bool) -> None:
    if not final.exists():
        os.rename(tmp, final)
        return
    # check again: another process may have written ``final`` while this one worked
    check_output(final, command=command, force=force)
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.rmdir(old)
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        os.rename(old, final)  # put the old output back
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_finished(folder: str | os.PathLike) -> None:
    """InputError when ``folder`` holds the marker of a ctdiff command that did not finish."""
    f = Path(folder)
    if not f.is_dir():
        return
    for marker in UNFINISHED_MARKERS:
        if (f / marker).exists():
            raise InputError(
                f"a ctdiff command started writing this folder and did not finish ({marker} marker); "
                "run the command again or delete the folder",
                f,
            )
    if PARTIAL_TAG in f.name and f.name.startswith("."):
        raise InputError("is the temporary folder of an unfinished ctdiff command; do not read it", f)
