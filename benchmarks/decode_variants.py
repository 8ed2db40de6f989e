#!/usr/bin/env python3
"""Sample as ``ctdiff sample`` does, with one change to how the latent is decoded (issue 20).

Two probes of what the decoder does at a volume's borders (docs/benchmarks.md, "Where the wavelet
bands' gap sits"):

- ``--ring``: the decoded estimate's outermost in-plane ring of voxels (its first and last rows and
  columns in every slice) is replaced by the ring inside it, before the noise model adds its noise.
  The decoder's last convolutions see zero padding there: on the demo model that ring reads 25 HU of
  SD in air against the phantoms' 20.
- ``--decode-z-pad N``: the latent is reflect-padded along z by N latent slices for decoding only,
  and the decoded volume cropped back before the noise is added, so the decoder's z borders fall
  outside the kept slices while the diffusion model samples the length it was trained on (unlike
  ``--z-margin``, which has the diffusion model sample the extra slices too). This probe was adopted:
  it is now ``ctdiff sample --decode-z-pad`` (``sample.decode_z_pad``; the demo model decodes with 2
  and ``z_margin`` 0), which the script passes it to.

Everything else (sampler, steps, seeds, ``--z-margin``, noise model, air floor) is ``ctdiff
sample``'s: for ``--ring`` the script wraps :func:`ctdiff.model.autoencoder.decode`, which the latent
space calls, for the duration of the draw.

    python benchmarks/decode_variants.py --model ctdiff_app/demo/assets/model.pt --ring --n 12 \\
        --seed 1000 --out runs/ring
    python benchmarks/decode_variants.py --model ctdiff_app/demo/assets/model.pt --decode-z-pad 2 \\
        --z-margin 0 --n 12 --seed 1000 --out runs/zpad2

The ring is not adopted (measured in docs/benchmarks.md); the script is the record of that measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))


def replace_ring(y):
    """``(N, C, D, H, W)``: the outermost rows and columns of every slice set to their inner neighbours."""
    y = y.clone()
    y[..., 0, :] = y[..., 1, :]
    y[..., -1, :] = y[..., -2, :]
    y[..., :, 0] = y[..., :, 1]
    y[..., :, -1] = y[..., :, -2]
    return y


@contextlib.contextmanager
def decode_variant(ring: bool = False) -> Iterator[None]:
    """While active, :func:`ctdiff.model.autoencoder.decode` decodes with the ring replaced (``ring``)."""
    import ctdiff.model.autoencoder as autoencoder

    original = autoencoder.decode

    def decode(ae, z, tile=None, z_pad=0):
        y = original(ae, z, tile, z_pad)  # cropped back along z; the ring is in-plane
        return replace_ring(y) if ring else y

    autoencoder.decode = decode
    try:
        yield
    finally:
        autoencoder.decode = original


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a latent-space checkpoint (e.g. the demo's model.pt)")
    p.add_argument("--ring", action="store_true", help="replace the decoded outermost in-plane ring")
    p.add_argument(
        "--decode-z-pad", type=int, default=None, help="as ctdiff sample --decode-z-pad (default: the config's)"
    )
    p.add_argument("--z-margin", type=int, default=None, help="as ctdiff sample --z-margin (default: the config's)")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--seed", type=int, default=1000, help="first seed (as ctdiff sample --seed)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the config's)")
    p.add_argument("--out", type=Path, required=True, help="new folder of case_NNN.nii.gz and manifest.json")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    if a.n < 1 or (a.steps is not None and a.steps < 1):
        p.error("--n and --steps must be >= 1")
    if a.decode_z_pad is not None and a.decode_z_pad < 0:
        p.error("--decode-z-pad must be >= 0")
    if not a.ring and a.decode_z_pad is None:
        p.error("nothing to change: give --ring and/or --decode-z-pad N")
    import torch

    from ctdiff.diffusion.sample import load_bundle, sample, write_samples
    from ctdiff.errors import CTDiffError

    torch.set_num_threads(max(1, a.threads))
    try:
        bundle = load_bundle(a.model, device="cpu")
        if bundle.space.kind != "latent":
            raise SystemExit(f"decode_variants: {a.model} is a {bundle.space.kind}-space model, not latent")
        t0 = time.perf_counter()
        cfg = bundle.config.sample
        steps = a.steps if a.steps is not None else cfg.steps
        with decode_variant(a.ring):
            volumes = sample(
                bundle, a.n, sampler=cfg.sampler, steps=steps, seed=a.seed, z_margin=a.z_margin,
                decode_z_pad=a.decode_z_pad,
            )  # fmt: skip
        info = {"ring": a.ring, "seconds": round(time.perf_counter() - t0, 1)}
        write_samples(volumes, a.out, info, force=a.force)
    except CTDiffError as e:  # a bad checkpoint, an existing --out: one line
        raise SystemExit(f"decode_variants: {e}") from None
    print(
        f"{a.n} volumes (ring {a.ring}, decode z pad {volumes[0].meta['decode_z_pad']}), {info['seconds']} s -> {a.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
