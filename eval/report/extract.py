"""Run a feature extractor over many cases: cache first, the rest in parallel worker processes.

Cached cases are loaded, missing ones are extracted by ``workers`` processes (each builds the
extractor once), and every new vector is saved to the cache as soon as it arrives, so an
interrupted run keeps what it finished; files with the same content are extracted once. Progress
goes to ``progress(done, total)``, counted in the extractor's sub-steps (``steps_per_item()``: 1 for
most, one per image type for radiomics, which takes minutes per scan), and repeated every
``HEARTBEAT_S`` seconds while work runs, so a bar's elapsed time and ETA keep moving between steps.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import dataclasses
import multiprocessing as mp
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctdiff.errors import CTDiffError
from eval.features.base import FeatureExtractor
from eval.report.cache import FeatureCache, cache_key, content_hash


@dataclasses.dataclass
class Extraction:
    names: list[str] | None
    vectors: dict[int, np.ndarray]  # item index -> feature vector
    failed: list[tuple[str, str]]  # (file, reason)
    n_cached: int = 0
    n_extracted: int = 0
    seconds: dict[int, float] = dataclasses.field(default_factory=dict)  # item index -> extraction wall time

    def matrix(self, indices: Sequence[int]) -> np.ndarray:
        rows = [self.vectors[i] for i in indices if i in self.vectors]
        width = len(self.names or [])
        return np.stack(rows) if rows else np.zeros((0, width))


HEARTBEAT_S = 1.0
_WORKER: FeatureExtractor | None = None
_STEPS = None  # a shared counter (multiprocessing.Value) of finished sub-steps, all workers together


def _count_step() -> None:
    with _STEPS.get_lock():
        _STEPS.value += 1


def _init_worker(extractor: FeatureExtractor, steps=None) -> None:
    global _WORKER, _STEPS
    _WORKER = extractor
    _STEPS = steps
    _WORKER.on_step = _count_step if steps is not None else None
    _WORKER.setup()


def _extract_one(payload) -> tuple[str, Any, Any, float]:
    return _extract_with(_WORKER, payload)


def _extract_with(extractor: FeatureExtractor, payload) -> tuple[str, Any, Any, float]:
    """(status, names or problem, values, seconds) of one extraction; also run by Dask workers."""
    start = time.perf_counter()
    try:
        names, values = extractor.extract(payload)
        return "ok", names, values, time.perf_counter() - start
    except CTDiffError as exc:
        return "error", exc.problem, None, time.perf_counter() - start
    except Exception as exc:  # a worker must report, not die: the batch goes on
        return "error", f"{type(exc).__name__}: {exc}", None, time.perf_counter() - start


# per Dask worker process: extractor key -> set-up extractor (eval.report.executor)
_EXTRACTORS: dict[tuple[str, int], Any] = {}  # per worker: (extractor key, thread) -> set-up extractor


_SETUP_LOCK = threading.Lock()


def run_on_worker(key: str, extractor, payload) -> tuple[str, Any, Any, float]:
    """One extraction on a Dask worker; the extractor is set up once per worker thread and key.

    A threaded worker (``LocalCluster(processes=False)``, ``threads_per_worker > 1``) runs tasks side
    by side in one process: each thread gets its own copy, and set-up is serialised, because
    pyradiomics parses its YAML parameter files with a parser that is not thread-safe (two threads
    setting up at once failed with ruamel.yaml ComposerError/ParserError).
    """
    slot = (key, threading.get_ident())
    ex = _EXTRACTORS.get(slot)
    if ex is None:
        with _SETUP_LOCK:
            ex = copy.deepcopy(extractor)
            ex.setup()
        _EXTRACTORS[slot] = ex
    return _extract_with(ex, payload)


def missing_from_cache(
    extractor: FeatureExtractor,
    paths: Sequence[Path],
    cache: FeatureCache | None,
    key_extra: dict[str, Any] | None = None,
) -> list[int]:
    """Indices of ``paths`` whose features are not cached yet (what :func:`extract_features` would extract)."""
    if cache is None:
        return list(range(len(paths)))
    settings = {**extractor.settings(), **(key_extra or {})}
    missing, seen = [], set()
    for i, p in enumerate(paths):
        key = cache_key(content_hash(p), extractor.name, settings)
        if key not in seen and not cache.path(extractor.name, key).is_file():
            missing.append(i)  # a later file with the same content is extracted with this one
        seen.add(key)
    return missing


def _context():
    # fork starts workers in milliseconds with the parent's imports; spawn elsewhere
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def extract_features(
    extractor: FeatureExtractor,
    items: Sequence[tuple[Path, Any]],
    cache: FeatureCache | None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    key_extra: dict[str, Any] | None = None,
    client=None,
) -> Extraction:
    """Features for ``items`` = [(case path, payload passed to ``extractor.extract``), ...].

    ``client``: a ``dask.distributed`` client; the missing cases are then extracted on its workers
    (:mod:`eval.report.executor`) instead of local worker processes, and cached here as they arrive.
    """
    settings = {**extractor.settings(), **(key_extra or {})}
    result = Extraction(names=None, vectors={}, failed=[])
    todo: list[tuple[int, str | None]] = []
    # files with the same content (and so the same cache key) in one call are extracted once: the
    # later ones are the first one's twins and take its result, counted as cached
    first_of: dict[str, int] = {}
    twins: dict[int, list[int]] = {}
    total = len(items)
    done = 0
    for i, (path, _) in enumerate(items):
        key = cache_key(content_hash(path), extractor.name, settings) if cache is not None else None
        hit = cache.load(extractor.name, key) if cache is not None else None
        if hit is not None and result.names is not None and hit[0] != result.names:
            hit = None  # a stale entry with another feature set: extract again
        if hit is not None:
            result.names = result.names or hit[0]
            result.vectors[i] = hit[1]
            result.n_cached += 1
            done += 1
        elif key is not None and key in first_of:
            twins.setdefault(first_of[key], []).append(i)
        else:
            if key is not None:
                first_of[key] = i
            todo.append((i, key))
    units = max(1, int(extractor.steps_per_item())) if progress is not None else 1
    steps = _context().Value("q", 0) if units > 1 else None
    lock = threading.Lock()  # the heartbeat thread and the main thread both report

    def report() -> None:
        if progress is None:
            return
        with lock:
            finished = done * units
            if steps is not None:  # sub-steps of the items in flight (clamped: a failed item stops early)
                running = steps.value - (done - result.n_cached) * units
                finished += min(max(running, 0), max(0, (total - done) * units - 1))
            progress(finished, total * units)

    report()

    def accept(i: int, key: str | None, status: str, a, b, seconds: float) -> None:
        nonlocal done
        done += 1
        result.seconds[i] = seconds
        if status == "ok" and result.names is not None and list(a) != result.names:
            status, a = "error", f"feature set differs from the other scans ({len(a)} vs {len(result.names)} features)"
        if status == "ok":
            names, values = a, np.asarray(b, dtype=np.float64)
            result.names = result.names or list(names)
            result.vectors[i] = values
            result.n_extracted += 1
            if cache is not None:
                cache.save(extractor.name, key, list(names), values)
        else:
            result.failed.append((str(items[i][0]), str(a)))
        for j in twins.get(i, ()):
            done += 1
            if status == "ok":
                result.vectors[j] = result.vectors[i]
                result.n_cached += 1
            else:
                result.failed.append((str(items[j][0]), str(a)))
        report()

    if not todo:
        return result
    stop = threading.Event()
    heartbeat = None
    if progress is not None:

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                report()

        heartbeat = threading.Thread(target=beat, name="extract-progress", daemon=True)
        heartbeat.start()
    try:
        if client is not None:
            from distributed import as_completed

            ex_key = cache_key("", extractor.name, settings)
            futures = {
                client.submit(run_on_worker, ex_key, extractor, items[i][1], pure=False): (i, key) for i, key in todo
            }
            for fut in as_completed(list(futures)):
                i, key = futures[fut]
                accept(i, key, *fut.result())
            return result
        if workers <= 1 or len(todo) == 1:
            _init_worker(extractor, steps)
            for i, key in todo:
                accept(i, key, *_extract_one(items[i][1]))
            return result
        with cf.ProcessPoolExecutor(
            max_workers=min(workers, len(todo)),
            mp_context=_context(),
            initializer=_init_worker,
            initargs=(extractor, steps),
        ) as pool:
            futures = {pool.submit(_extract_one, items[i][1]): (i, key) for i, key in todo}
            for fut in cf.as_completed(futures):
                i, key = futures[fut]
                accept(i, key, *fut.result())
        return result
    finally:
        stop.set()
        if heartbeat is not None:
            heartbeat.join()
        extractor.on_step = None  # in-process runs attached the counter to the caller's extractor
