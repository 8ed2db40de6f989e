"""Benchmark: cost of verifying the gzip stream (CRC-32, length) when reading a .nii.gz.

``read_volume`` decompresses the whole .nii.gz with Python's gzip (which checks the CRC-32 and the
length trailer) and parses the verified bytes; nibabel alone stops once it has the voxels and never
sees the trailer. Compared side by side in one process, alternating, on the same file: the
unverified read (nibabel ``get_fdata`` + ctdiff's checks and RAS reorientation, the read before issue
17) and ``read_volume``.

    .venv/bin/python benchmarks/bench_read_integrity.py [--shape 512 512 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import nibabel as nib  # noqa: E402

from ctdiff.data.io import _canonical, _check_array, read_volume, write_nifti  # noqa: E402
from ctdiff.data.volume import Volume  # noqa: E402


def unverified(path: Path) -> np.ndarray:
    img = nib.load(str(path))
    array = _check_array(img.get_fdata(dtype=np.float32), path)
    return _canonical(array, img.affine)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 64])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.nii.gz"
        arr = np.random.default_rng(0).normal(0, 300, args.shape).astype(np.float32)
        write_nifti(Volume.from_spacing(arr, (0.8, 0.8, 2.5)), path)
        np.testing.assert_array_equal(unverified(path), read_volume(path).array)  # same voxels
        times = {"unverified": [], "read_volume": []}
        for _ in range(args.repeats):
            for name, fn in (("unverified", unverified), ("read_volume", lambda p: read_volume(p).array)):
                t = time.perf_counter()
                fn(path)
                times[name].append(time.perf_counter() - t)
        size = path.stat().st_size / 2**20
    print(f"{'x'.join(map(str, args.shape))} int16 .nii.gz ({size:.1f} MiB), {args.repeats} alternating repeats")
    for name, ts in times.items():
        print(f"  {name:12s} median {statistics.median(ts):.3f} s  (min {min(ts):.3f}, max {max(ts):.3f})")
    print(
        f"  ratio read_volume / unverified: {statistics.median(times['read_volume']) / statistics.median(times['unverified']):.2f}"
    )


if __name__ == "__main__":
    main()
