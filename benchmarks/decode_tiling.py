#!/usr/bin/env python3
"""Where a latent model's tissue levels go: encoded and decoded whole, or in the coder's patch (issue 20).

An autoencoder trained on patches (GroupNorm) shifts its levels when it codes a whole volume, and
``sample.decode_z_pad`` reflect-pads the latent along z for the decoder. This benchmark measures what
each way of coding does to the tissue levels, with no noise model and no diffusion in between:

- **reconstructions** (``--scans``, ``--n`` of them): every scan is encoded (posterior mean) and
  decoded by each ``--autoencoder`` in each ``--variant``, and the reconstruction is compared with the
  scan: its mean HU error (``bias``) in the body, soft tissue and fat of the *scan* (eval's tissue
  classes: ``eval.metrics.intensity.tissue_masks`` on the scan's body), and the tissue means the report
  reads (``class_mean``: soft tissue and fat, each volume on its own masks, as ``eval report`` measures
  them);
- **samples** (``--samples NAME=CHECKPOINT``, repeatable): a latent checkpoint draws ``--n-samples`` latents as
  ``ctdiff sample`` does (its sampler, steps, spread correction; seeds ``--seed``..; ``z_margin`` 0)
  and each is decoded in each variant's *decode* way (its encode part is not used), without the noise;
  ``class_mean`` of the decoded samples.

A variant is ``ENCODE,DECODE,ZPAD``: ``whole`` (one piece, as ``ctdiff sample`` decodes a latent of up to
``sample.decode_tile``), ``patch`` (sliding windows of the coder's training patch, MONAI's
``SlidingWindowInferer`` with overlap 0.25 and Gaussian blending, as ``sample.decode_tile`` set to the
patch over the downsampling decodes), or ``DxHxW`` latent voxels; ZPAD is ``decode_z_pad``'s latent
slices. Encoding windows are the decode windows times the downsampling.

    python benchmarks/decode_tiling.py --scans data/ph128-train --n 3 \\
        --autoencoder demo=ctdiff_app/demo/assets/model.pt --autoencoder s10000=runs/ae-long/autoencoder.pt \\
        --json benchmarks/results/decode-tiling.json
    python benchmarks/decode_tiling.py --scans data/ph128-train --n 12 --autoencoder d=runs/d/checkpoints/best.pt \\
        --samples d=runs/d/checkpoints/best.pt --n-samples 12 --variant whole,whole,2 --variant whole,whole,0 \\
        --variant whole,4x16x16,0 --variant whole,8x16x16,0
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import runpy
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

DEFAULT_VARIANTS = (
    "whole,whole,2",
    "whole,whole,0",
    "patch,patch,0",
    "patch,patch,2",
    "whole,patch,0",
    "patch,whole,2",
)
REGIONS = ("body", "soft_tissue", "fat")
CLASSES = ("soft_tissue", "fat")


@dataclasses.dataclass(frozen=True)
class Variant:
    encode: str
    decode: str
    z_pad: int

    @property
    def name(self) -> str:
        return f"{self.encode},{self.decode},{self.z_pad}"


def _tile_spec(text: str) -> str:
    if text in ("whole", "patch"):
        return text
    parts = text.split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"a tile is whole, patch or DxHxW latent voxels (positive integers), got {text!r}")
    return text


def parse_variant(text: str) -> Variant:
    """``ENCODE,DECODE,ZPAD`` (see the module doc); ValueError with the reason otherwise."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"a variant is ENCODE,DECODE,ZPAD (e.g. whole,patch,0), got {text!r}")
    if not parts[2].isdigit():
        raise ValueError(f"ZPAD must be a whole number of latent slices >= 0, got {parts[2]!r}")
    return Variant(_tile_spec(parts[0]), _tile_spec(parts[1]), int(parts[2]))


def latent_tile(spec: str, ae_config) -> tuple[int, int, int] | None:
    """The decode window in latent voxels for a tile spec: None for ``whole`` (one piece)."""
    if spec == "whole":
        return None
    f = ae_config.downsampling
    if spec == "patch":
        return tuple(int(p) // f for p in ae_config.patch)
    return tuple(int(p) for p in spec.split("x"))


def encode_tile(spec: str, ae_config) -> tuple[int, int, int] | None:
    """The encode window in voxels: the latent window times the downsampling (None: whole)."""
    t = latent_tile(spec, ae_config)
    return None if t is None else tuple(v * ae_config.downsampling for v in t)


def class_means(array: np.ndarray) -> dict[str, float]:
    """Soft-tissue and fat means of an (x, y, z) HU volume on its own tissue masks, as ``eval report``
    reads them (``eval.report.cases.case_stats``)."""
    from ctdiff.data.body import body_mask
    from eval.metrics import intensity

    means = intensity.tissue_mean_hu(array, intensity.tissue_masks(array, body_mask(array)))
    return {k: means[k] for k in CLASSES}


def scan_regions(scan: np.ndarray) -> dict[str, np.ndarray]:
    """The scan's body and eval's soft-tissue and fat masks on it (where the errors are read)."""
    from ctdiff.data.body import body_mask
    from eval.metrics import intensity

    body = body_mask(scan)
    return {"body": body, **intensity.tissue_masks(scan, body)}


def compare(scan: np.ndarray, recon: np.ndarray, regions=None, scan_means=None) -> dict:
    """The reconstruction's mean HU error in the scan's body, soft tissue and fat, and both volumes'
    class means (``regions`` and ``scan_means``: the scan's, when already computed)."""
    masks = scan_regions(scan) if regions is None else regions
    diff = recon.astype(np.float64) - scan.astype(np.float64)
    bias = {r: float(diff[masks[r]].mean()) if masks[r].any() else float("nan") for r in REGIONS}
    own = class_means(scan) if scan_means is None else scan_means
    return {"bias": bias, "class_mean": class_means(recon), "scan_class_mean": own}


def _decode(ae, z, variant: Variant, cfg):
    from ctdiff.model.autoencoder import decode

    return decode(ae, z, latent_tile(variant.decode, cfg), variant.z_pad).clamp(-1.0, 1.0)


def _check_z_pad(variant: Variant, latent_depth: int) -> None:
    if variant.z_pad >= latent_depth:
        raise SystemExit(
            f"decode_tiling: variant {variant.name}: ZPAD must be below the latent's {latent_depth} slices"
        )


def reconstructions(record: dict, scans: list[Path], variants: list[Variant]) -> dict:
    """``compare`` of every scan with its reconstruction in every variant (``{variant: [per scan]}``)."""
    import torch

    from ctdiff.data.io import read_volume
    from ctdiff.data.tensors import array_to_tensor, hu_to_model, model_to_hu, tensor_to_array
    from ctdiff.model.autoencoder import build_autoencoder, encode_mean

    ae, cfg = build_autoencoder(record["config"])
    ae.load_state_dict({k: v.float() for k, v in record["state"].items()})  # a checkpoint may carry fp16
    ae.eval()
    out: dict[str, list] = {v.name: [] for v in variants}
    with torch.no_grad():
        for path in scans:
            array = read_volume(path).array
            x = hu_to_model(array_to_tensor(array), cfg.hu_window)[None]
            regions, scan_means = scan_regions(array), class_means(array)  # once per scan, for every variant
            latents = {}
            for v in variants:
                if v.encode not in latents:
                    latents[v.encode] = encode_mean(ae, x, encode_tile(v.encode, cfg))
                z = latents[v.encode]
                _check_z_pad(v, z.shape[2])
                recon = tensor_to_array(model_to_hu(_decode(ae, z, v, cfg)[0], cfg.hu_window))
                out[v.name].append({"scan": path.name, **compare(array, recon, regions, scan_means)})
    return out


def sample_latents(checkpoint: Path, n: int, seed: int, steps: int | None = None):
    """``n`` latents (unscaled: as the decoder takes them) drawn as ``ctdiff sample`` draws them
    (``z_margin`` 0; ``steps`` default: the config's), with the bundle they came from."""
    import torch

    from ctdiff.diffusion.sample import load_bundle, sample

    bundle = load_bundle(checkpoint, device="cpu")
    if bundle.space.kind != "latent":
        raise SystemExit(f"decode_tiling: {checkpoint} is a {bundle.space.kind}-space model, not latent")
    drawn = []
    space = bundle.space
    original = space.decode

    def keep(z, noise_seeds=None, z_pad=0):  # record what the decoder is handed, then decode as usual
        drawn.append(z.float() / space.scale)
        return original(z, noise_seeds, z_pad=z_pad)

    space.decode = keep
    try:
        cfg = bundle.config.sample
        sample(bundle, n, sampler=cfg.sampler, steps=steps or cfg.steps, seed=seed, noise=False, z_margin=0)
    finally:
        space.decode = original
    return torch.cat(drawn), bundle


def decoded_samples(latents, bundle, variants: list[Variant]) -> dict:
    """Class means of every latent decoded in every variant's decode way (``{variant: [per sample]}``)."""
    import torch

    from ctdiff.data.tensors import model_to_hu, tensor_to_array

    ae, cfg = bundle.space.ae, bundle.space.ae_config
    out: dict[str, list] = {}
    with torch.no_grad():
        for v in variants:
            _check_z_pad(v, latents.shape[2])
            out[v.name] = [
                class_means(tensor_to_array(model_to_hu(_decode(ae, z[None], v, cfg)[0], cfg.hu_window)))
                for z in latents
            ]
    return out


def _mean(rows: list[dict], *keys: str) -> float:
    values = []
    for r in rows:
        for k in keys:
            r = r[k]
        values.append(r)
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def summarise(result: dict) -> dict:
    """Means over scans (samples) per variant."""
    out = {"reconstructions": {}, "samples": {}}
    for name, by_variant in result.get("reconstructions", {}).items():
        out["reconstructions"][name] = {
            v: {
                **{f"bias_{r}": _mean(rows, "bias", r) for r in REGIONS},
                **{f"class_mean_{c}": _mean(rows, "class_mean", c) for c in CLASSES},
            }
            for v, rows in by_variant.items()
        }
        rows = next(iter(by_variant.values()))
        out["scans_class_mean"] = {c: _mean(rows, "scan_class_mean", c) for c in CLASSES}
    for name, by_variant in result.get("samples", {}).items():
        out["samples"][name] = {
            v: {f"class_mean_{c}": _mean(rows, c) for c in CLASSES} for v, rows in by_variant.items()
        }
    return out


def markdown(summary: dict) -> str:
    lines = []
    for name, by_variant in summary["reconstructions"].items():
        lines += [
            f"reconstructions by {name}: mean HU error (recon - scan) in the scan's body / soft tissue / fat; "
            "class means on the reconstruction's own masks (soft tissue / fat)",
            "",
            "| encode, decode, z pad | body | soft tissue | fat | class means |",
            "|---|---|---|---|---|",
        ]
        for v, s in by_variant.items():
            lines.append(
                f"| {v} | {s['bias_body']:+.1f} | {s['bias_soft_tissue']:+.1f} | {s['bias_fat']:+.1f} | "
                f"{s['class_mean_soft_tissue']:.1f} / {s['class_mean_fat']:.1f} |"
            )
        lines.append("")
    if "scans_class_mean" in summary:
        m = summary["scans_class_mean"]
        lines += [f"the scans' own class means: {m['soft_tissue']:.1f} / {m['fat']:.1f}", ""]
    for name, by_variant in summary["samples"].items():
        lines += [f"samples of {name} decoded without noise: class means (soft tissue / fat)", ""]
        lines += ["| decode, z pad | class means |", "|---|---|"]
        for v, s in by_variant.items():
            lines.append(f"| {v.split(',', 1)[1]} | {s['class_mean_soft_tissue']:.1f} / {s['class_mean_fat']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scans", type=Path, help="a folder of HU volumes to reconstruct (case_*.nii.gz)")
    p.add_argument("--n", type=int, default=3, help="the first N scans of --scans (default 3)")
    p.add_argument(
        "--autoencoder", action="append", default=[], metavar="NAME=PATH",
        help="an autoencoder.pt or a latent checkpoint that carries one (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--samples", action="append", default=[], metavar="NAME=CHECKPOINT",
        help="a latent checkpoint: decode its samples' latents each way (repeatable)",
    )  # fmt: skip
    p.add_argument("--n-samples", type=int, default=12)
    p.add_argument("--seed", type=int, default=1000, help="first sampling seed (as ctdiff sample --seed)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint config's)")
    p.add_argument(
        "--variant", action="append", default=None, metavar="ENCODE,DECODE,ZPAD",
        help=f"repeatable (default: {' '.join(DEFAULT_VARIANTS)})",
    )  # fmt: skip
    p.add_argument("--json", type=Path, help="write the results here (a new file unless --force)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    try:
        variants = [parse_variant(t) for t in (a.variant or DEFAULT_VARIANTS)]
    except ValueError as e:
        p.error(str(e))
    if a.n < 1 or a.n_samples < 1 or a.threads < 1 or (a.steps is not None and a.steps < 1):
        p.error("--n, --n-samples, --steps and --threads must be >= 1")
    if not a.autoencoder and not a.samples:
        p.error("nothing to measure: give --autoencoder NAME=PATH and --scans, and/or --samples NAME=CHECKPOINT")
    if a.autoencoder and a.scans is None:
        p.error("--autoencoder needs --scans")

    def named(items: list[str], flag: str, exists) -> dict[str, Path]:
        out = {}
        for item in items:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                p.error(f"{flag} takes NAME=PATH, got {item!r}")
            if name in out:
                p.error(f"{flag}: the name {name!r} is given twice")
            if not exists(Path(path)):
                p.error(f"{path}: no such {'checkpoint' if flag == '--samples' else 'autoencoder file or checkpoint'}")
            out[name] = Path(path)
        return out

    coders = named(a.autoencoder, "--autoencoder", Path.exists)
    checkpoints = named(a.samples, "--samples", Path.is_file)
    scans = []
    if a.scans is not None:
        if not a.scans.is_dir():
            p.error(f"{a.scans}: no such folder")
        scans = sorted(a.scans.glob("*.nii.gz"))[: a.n]
        if not scans:
            p.error(f"{a.scans}: no .nii.gz volumes")
    if a.json is not None and a.json.exists() and not a.force:
        p.error(f"{a.json}: already exists; pass --force to overwrite")

    import torch

    from ctdiff.errors import CTDiffError

    ceiling = runpy.run_path(str(REPO / "benchmarks" / "bench_ae_ceiling.py"), run_name="bench_ae_ceiling")
    torch.set_num_threads(a.threads)
    started = time.perf_counter()
    result: dict = {"variants": [v.name for v in variants], "scans": [s.name for s in scans]}
    if coders:
        result["reconstructions"] = {}
        result["coders"] = {}
        for name, path in coders.items():
            record, facts = ceiling["load_record"](path)
            result["coders"][name] = {"path": str(path), **facts, "patch": list(record["config"].get("patch", []))}
            result["reconstructions"][name] = reconstructions(record, scans, variants)
            print(f"decode_tiling: {name}: {len(scans)} scan(s) x {len(variants)} variant(s)", file=sys.stderr)
    if checkpoints:
        result["samples"], result["sampling"] = {}, {}
    for name, path in checkpoints.items():
        try:
            latents, bundle = sample_latents(path, a.n_samples, a.seed, a.steps)
        except CTDiffError as e:  # not a checkpoint, a bad sampling setting: one line
            raise SystemExit(f"decode_tiling: {e}") from None
        result["samples"][name] = decoded_samples(latents, bundle, variants)
        result["sampling"][name] = {
            "checkpoint": str(path),
            "n": a.n_samples,
            "seed": a.seed,
            "steps": a.steps or bundle.config.sample.steps,
            "config_decode_tile": list(bundle.config.sample.decode_tile),
            "config_decode_z_pad": bundle.config.sample.decode_z_pad,
        }
        print(f"decode_tiling: {name}: {a.n_samples} sample(s) x {len(variants)} variant(s)", file=sys.stderr)
    result["summary"] = summarise(result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = {"python": platform.python_version(), "torch": torch.__version__, "threads": a.threads}
    print(markdown(result["summary"]))
    if a.json is not None:
        from ctdiff.atomic import write_json

        write_json(a.json, result)
        print(f"decode_tiling: wrote {a.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
