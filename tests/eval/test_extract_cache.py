"""Feature cache and parallel extraction with a cheap stand-in extractor."""

from __future__ import annotations

import numpy as np
import pytest

from eval.features import available_extractors, create
from eval.features.base import FeatureExtractor
from eval.report.cache import FeatureCache, cache_key, content_hash
from eval.report.extract import extract_features


class ByteStats(FeatureExtractor):
    """Mean and length of a file's bytes, scaled by a setting; fails on files named bad*."""

    name = "byte-stats"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def settings(self):
        return {"scale": self.scale}

    def extract(self, item):
        if item.name.startswith("bad"):
            raise ValueError("cannot read this one")
        data = np.frombuffer(item.read_bytes(), dtype=np.uint8)
        return ["mean", "size"], np.array([data.mean() * self.scale, data.size])


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(bytes(range(i, 40 + i)))
        paths.append(p)
    return paths


@pytest.mark.parametrize("workers", [1, 2])
def test_cache_hits_misses_and_failures(tmp_path, files, workers):
    cache = FeatureCache(tmp_path / "cache")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"xx")
    items = [(p, p) for p in files + [bad]]
    seen = []
    first = extract_features(ByteStats(), items, cache, workers=workers, progress=lambda d, t: seen.append((d, t)))
    assert (first.n_cached, first.n_extracted) == (0, 5)
    assert first.failed == [(str(bad), "ValueError: cannot read this one")]
    assert seen[-1] == (6, 6)
    assert first.names == ["mean", "size"]
    assert first.matrix(range(5))[:, 0].tolist() == pytest.approx([19.5 + i for i in range(5)])
    again = extract_features(ByteStats(), items, cache, workers=workers)
    assert (again.n_cached, again.n_extracted) == (5, 0)
    assert np.array_equal(again.matrix(range(5)), first.matrix(range(5)))
    other = extract_features(ByteStats(scale=2.0), items[:5], cache, workers=workers)  # new setting: new key
    assert other.n_extracted == 5
    files[0].write_bytes(b"\x00" * 40)  # changed content: that file only
    changed = extract_features(ByteStats(), items[:5], cache, workers=workers)
    assert (changed.n_cached, changed.n_extracted) == (4, 1)
    assert changed.vectors[0][0] == 0.0


class Counted(ByteStats):
    """ByteStats that counts its calls in a file (the calls happen in worker processes)."""

    name = "byte-stats-counted"

    def __init__(self, log):
        super().__init__()
        self.log = log

    def extract(self, item):
        with open(self.log, "a") as f:
            f.write(item.name + "\n")
        return super().extract(item)


@pytest.mark.parametrize("workers", [1, 2])
def test_files_with_the_same_content_are_extracted_once(tmp_path, files, workers):
    """A cohort that holds one scan several times (a collapsed generator; a file copied twice): one
    extraction, its result given to every copy and counted as cached; a failure fails every copy."""
    from eval.report.extract import missing_from_cache

    copies = []
    for i in range(3):
        c = tmp_path / f"copy{i}.bin"
        c.write_bytes(files[1].read_bytes())
        copies.append(c)
    bad = [tmp_path / "bad1.bin", tmp_path / "bad2.bin"]
    for b in bad:
        b.write_bytes(b"xx")
    paths = [files[0], *copies, files[1], bad[0], bad[1]]
    log = tmp_path / "calls.log"
    ex = Counted(log)
    cache = FeatureCache(tmp_path / "cache")
    assert missing_from_cache(ex, paths, cache) == [0, 1, 5]  # what extract_features will extract
    seen = []
    got = extract_features(
        ex, [(p, p) for p in paths], cache, workers=workers, progress=lambda d, t: seen.append((d, t))
    )
    assert sorted(log.read_text().split()) == ["bad1.bin", "copy0.bin", "f0.bin"]
    assert (got.n_extracted, got.n_cached) == (2, 3) and seen[-1] == (7, 7)
    assert sorted(got.vectors) == [0, 1, 2, 3, 4]
    for j in (2, 3, 4):
        assert np.array_equal(got.vectors[j], got.vectors[1])
    assert got.vectors[1][0] == pytest.approx(20.5) and set(got.seconds) == {0, 1, 5}
    assert sorted(f for f, _ in got.failed) == [str(b) for b in bad]
    # without a cache there is no content key: every file is extracted
    log.unlink()
    plain = extract_features(ex, [(p, p) for p in paths[:5]], None, workers=workers)
    assert plain.n_extracted == 5 and len(log.read_text().split()) == 5


def test_cache_key_and_entries(tmp_path, files):
    h = content_hash(files[0])
    assert h == content_hash(files[0]) != content_hash(files[1])
    assert cache_key(h, "x", {"a": 1}) != cache_key(h, "x", {"a": 2}) != cache_key(h, "y", {"a": 2})
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"abc")
    h1 = content_hash(folder)
    (folder / "2.dcm").write_bytes(b"def")
    assert content_hash(folder) != h1
    cache = FeatureCache(tmp_path / "c")
    path = cache.save("ex", "ab" * 32, ["f1", "f2"], np.array([1.5, 2.5]))
    assert path.parent.name == "ab" and not list(path.parent.glob("*.tmp*"))
    names, values = cache.load("ex", "ab" * 32)
    assert names == ["f1", "f2"] and values.tolist() == [1.5, 2.5]
    path.write_bytes(b"garbage")
    assert cache.load("ex", "ab" * 32) is None  # corrupt entry: treated as a miss


def test_registry_knows_the_builtin_extractors():
    assert {"radiomics-frd-v1", "inception-v3-fid-2d"} <= set(available_extractors())
    with pytest.raises(KeyError, match="unknown feature extractor"):
        create("nope")
    assert create("radiomics-frd-v1", image_dim=3).settings()["frd_version"] == "v1"
