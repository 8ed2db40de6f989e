"""Progress of a batch loop: a tqdm bar, nothing, or the caller's ``f(done, total)`` callback.

Batch functions take ``progress: bool | Callable[[int, int], None]`` (True = a bar on stderr, for the
CLIs; a callback, for the app and tests); :func:`counted` is the one loop that serves all three.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
Progress = bool | Callable[[int, int], None]


def counted(items: Sequence[T], progress: Progress, desc: str, unit: str) -> Iterator[T]:
    """Yield ``items``; after each one's loop body, advance a bar (``progress=True``) or call
    ``progress(done, total)``. The bar is closed when the loop ends, also by an exception."""
    total = len(items)
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit)
    try:
        for i, item in enumerate(items):
            yield item
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(i + 1, total)
    finally:
        if bar is not None:
            bar.close()
