"""Seeded randomness of a review session: which files become cases, each reader's case order, codes.

Everything that must be reproducible from the session seed (case selection, reading orders) uses
``numpy.random.Generator`` streams derived from ``SeedSequence([seed, stream, ...])``; nothing
seeds a global RNG. Identifiers that must be unguessable (case IDs, reader access codes) come from
:mod:`secrets` instead, so they carry no information about files or cohorts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")

# stream numbers of SeedSequence([seed, stream, ...])
STREAM_REAL = 0
STREAM_GENERATED = 1
STREAM_READER = 2
STREAM_PAIRS = 4  # (3 orders the cases of a new session)
STREAM_PRACTICE = 5
STREAM_PRACTICE_PAIRS = 6  # the practice pairs of a 2AFC session

# access codes avoid look-alike characters (0/O, 1/I/L) so they can be read out or typed from paper
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_GROUPS = 3
CODE_GROUP_LEN = 4  # 12 characters from 31 symbols: ~59 bits
MIN_CODE_LENGTH = 8  # a chosen code (e.g. the demo's) needs at least this many characters
LOOKUP_CHARS = 2  # characters of a code kept in clear to find its row (~10 bits of a random code)
# scrypt cost: N = 2^14, r = 8, p = 1 (16 MiB, tens of ms per hash): the parameters RFC 7914 and
# OWASP's password-storage cheat sheet give for interactive logins
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(e) for e in entropy]))


def candidate_order(paths: Sequence[Path], seed: int, stream: int, folder: int = 0) -> list[Path]:
    """All ``paths`` (sorted first, so the file system's listing order does not matter) in a
    seeded random order; a session takes the first N that read cleanly. ``folder`` numbers the
    generated folders of a several-model session (0 keeps the one-folder order)."""
    ordered = sorted(paths, key=lambda p: str(p))
    perm = (_rng(seed, stream) if folder == 0 else _rng(seed, stream, folder)).permutation(len(ordered))
    return [ordered[i] for i in perm]


def reader_order(case_ids: Sequence[T], seed: int, reader_index: int, stream: int = STREAM_READER) -> list[T]:
    """One reader's reading order: a permutation of ``case_ids`` seeded by (session seed, reader).

    ``reader_index`` is the reader's number within the session (1, 2, ...), so re-creating a session
    with the same seed and readers gives the same orders; different readers get independent orders.
    """
    perm = _rng(seed, stream, reader_index).permutation(len(case_ids))
    return [case_ids[i] for i in perm]


def afc_pairs(
    real_ids: Sequence[T], synthetic_ids: Sequence[T], seed: int, reader_index: int, stream: int = STREAM_PAIRS
) -> list[tuple[T, T]]:
    """One reader's two-alternative forced-choice pairs, as (left, right).

    Every pair holds one real and one synthetic case (never two of one cohort); each case appears
    at most once per reader (``min(n_real, n_synthetic)`` pairs); which side is real is a fair coin
    per pair. Seeded by (session seed, reader), like :func:`reader_order`; practice pairs use their
    own ``stream``.
    """
    rng = _rng(seed, stream, reader_index)
    n = min(len(real_ids), len(synthetic_ids))
    real = [real_ids[i] for i in rng.permutation(len(real_ids))[:n]]
    syn = [synthetic_ids[i] for i in rng.permutation(len(synthetic_ids))[:n]]
    real_left = rng.integers(0, 2, n).astype(bool)
    return [(r, s) if left else (s, r) for r, s, left in zip(real, syn, real_left)]


def new_case_code() -> str:
    """An opaque case ID (8 hex digits from the OS's CSPRNG): says nothing about file or cohort."""
    return secrets.token_hex(4)


def new_access_code() -> str:
    """A random reader access code such as ``K7PM-2QXD-9HTR``."""
    groups = ("".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUP_LEN)) for _ in range(CODE_GROUPS))
    return "-".join(groups)


def normalise_code(code: str) -> str:
    """Codes are compared ignoring case and surrounding spaces."""
    return code.strip().upper()


def hash_code(code: str) -> str:
    """The pre-v3 form of a stored code: unsalted SHA-256 hex of the normalised code. Only used to
    recognise (and then re-hash) codes of databases written before schema version 3."""
    return hashlib.sha256(normalise_code(code).encode("utf-8")).hexdigest()


def code_lookup(code: str) -> str:
    """The first characters of a normalised code: which rows to try a code against."""
    return normalise_code(code)[:LOOKUP_CHARS]


def new_salt() -> str:
    return secrets.token_hex(16)


def scrypt_code(code: str, salt: str) -> str:
    """Salted, memory-hard hash of a normalised code (``hashlib.scrypt``), hex."""
    return hashlib.scrypt(
        normalise_code(code).encode("utf-8"),
        salt=bytes.fromhex(salt),
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=64 * 1024 * 1024,
        dklen=SCRYPT_LEN,
    ).hex()


def code_matches(code: str, kdf: str, salt: str, stored: str) -> bool:
    """Does ``code`` hash to ``stored``? Constant-time comparison of the digests."""
    digest = scrypt_code(code, salt) if kdf == "scrypt" else hash_code(code)
    return hmac.compare_digest(digest.encode("ascii"), stored.encode("ascii"))
