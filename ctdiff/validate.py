"""Option validators: every command checks its options here, at the edge, before any work.

Each function returns the cleaned value or raises :class:`~ctdiff.errors.ConfigError` naming the
option, the value and the allowed range, in one line. argparse only checks types; NaN, inf,
negative counts, absurd shapes and seeds outside the generators' range get through it, so the
commands' ``run(args)`` call these first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from ctdiff.errors import ConfigError

# numpy's SeedSequence takes any integer >= 0, torch.Generator.manual_seed a uint64; the commands
# add a case index to the seed, so seeds stay in uint32 with room to spare
MAX_SEED = 2**32 - 1
# refuse work whose arrays would not fit: a fraction of physical memory (the rest is the OS, torch, ...)
MEMORY_FRACTION = 0.5


def number(value, option: str, *, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
    """A finite float with ``low <= value <= high`` (``low < value`` with ``low_open``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{option} must be a finite number, got {value}")
    if low is not None and (v <= low if low_open else v < low):
        raise ConfigError(f"{option} must be {'>' if low_open else '>='} {low:g}, got {value}")
    if high is not None and v > high:
        raise ConfigError(f"{option} must be <= {high:g}, got {value}")
    return v


def integer(value, option: str, *, low: int | None = None, high: int | None = None) -> int:
    """An int with ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{option} must be an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"{option} must be an integer, got {value!r}")
        value = int(f)
    if low is not None and value < low:
        raise ConfigError(f"{option} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{option} must be <= {high}, got {value}")
    return int(value)


def numbers(values: Sequence, option: str, n: int = 3, **limits) -> tuple[float, ...]:
    vals = list(values)
    if len(vals) != n:
        raise ConfigError(f"{option} needs {n} numbers, got {vals}")
    return tuple(number(v, option, **limits) for v in vals)


def integers(values: Sequence, option: str, n: int = 3, **limits) -> tuple[int, ...]:
    vals = list(values)
    if len(vals) != n:
        raise ConfigError(f"{option} needs {n} integers, got {vals}")
    return tuple(integer(v, option, **limits) for v in vals)


def seed(value, option: str = "--seed", count: int = 1) -> int:
    """A seed in [0, MAX_SEED - count + 1] (the commands use seed + i for case i < count)."""
    return integer(value, option, low=0, high=MAX_SEED - max(0, count - 1))


def physical_memory() -> int:
    """Bytes of RAM of this machine (0 when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def fits_in_memory(n_bytes: float, what: str, option: str) -> None:
    """ConfigError when ``n_bytes`` is more than :data:`MEMORY_FRACTION` of physical memory."""
    total = physical_memory()
    if total and n_bytes > MEMORY_FRACTION * total:
        raise ConfigError(
            f"{option}: {what} would need about {n_bytes / 2**30:.1f} GiB, more than "
            f"{MEMORY_FRACTION:.0%} of this machine's {total / 2**30:.1f} GiB; choose a smaller size"
        )


def steps(value, schedule_length: int, option: str = "--steps") -> int:
    """Sampler steps: 1 <= steps <= the schedule's training timesteps."""
    return integer(value, option, low=1, high=int(schedule_length))


def metric_list(value: str | None, option: str = "--metrics") -> str | None:
    """None (all) or a comma list with at least one non-empty name; ``""`` is an error, not "all"."""
    if value is None:
        return None
    names = [v.strip() for v in str(value).split(",")]
    if not any(names):
        raise ConfigError(f"{option} is empty; leave it out to compute every metric")
    if not all(names):
        raise ConfigError(f"{option} has an empty name in {value!r}")
    return ",".join(names)


def device(value: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and only when this machine has it."""
    import torch

    name = str(value).strip()
    if name in ("", "auto"):
        return "auto"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"--device {value!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return name
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {value}: CUDA is not available on this machine; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return name
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"--device {value}: MPS is not available on this machine; use --device cpu or auto")
        return name
    raise ConfigError(f"--device {value!r} is not supported; use auto, cpu, cuda, cuda:N or mps")


def threads(value, option: str = "--threads") -> int | None:
    if value is None:
        return None
    return integer(value, option, low=1, high=4096)
