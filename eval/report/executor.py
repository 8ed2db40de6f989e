"""Where feature extraction runs: worker processes on this machine, or a Dask cluster.

``local`` keeps :func:`eval.report.extract.extract_features`'s own process pool. ``dask`` sends
one task per case to a ``dask.distributed`` scheduler (``--scheduler tcp://host:8786``, or an
in-process ``LocalCluster`` with ``workers`` workers when no address is given); workers build
the extractor once each (:func:`eval.report.extract.run_on_worker` keeps it per worker), and results come back to
the caller, which alone writes the content-addressed cache, so a local run and a cluster run give
identical features and share the cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

EXECUTORS = ("local", "dask")


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2) -> Iterator[Any]:
    """A ``distributed.Client`` to ``scheduler``, or to a temporary LocalCluster of ``workers``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask[distributed] is in requirements.txt
        raise RuntimeError("--executor dask needs dask[distributed] (pip install -r requirements.txt)") from exc
    if scheduler:
        with Client(scheduler) as client:
            yield client
    else:
        with (
            LocalCluster(
                n_workers=max(1, int(workers)), threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
