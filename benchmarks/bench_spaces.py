#!/usr/bin/env python3
"""Memory and time per space (pixel, wavelet, latent) as the volume grows: the issue-20 curve.

For each space and volume size, one subprocess measures one phase with ``configs/demo.yaml``'s U-Net
(only its input/output channels change with the space):

- ``train``: a batch-1 training step (forward, v-loss, backward, AdamW step) on the space's tensor
  (pixel: the volume; wavelet: its 8 Haar sub-bands at half size, transform included; latent: a
  cached 4x-downsampled latent, as ``ctdiff train`` uses them);
- ``eval``: one sampling network evaluation (no grad, batch 1);
- ``decode`` (latent only): decoding one latent to the volume with the tiled (SlidingWindowInferer)
  decoder of an untrained ``AutoencoderKL`` of the default ``train-autoencoder`` size
  (the cost does not depend on the weights).

Seconds are the median of the timed repetitions after one warm-up, as wall-clock ``seconds`` and as
the process' CPU time ``cpu_seconds`` (with one thread, the compute time; on a shared, overloaded
machine the wall clock mostly measures the queue for a core); memory is the process' peak RSS
(``ru_maxrss``), which includes the ~0.3 GB of torch itself. Each subprocess runs under an address-space
limit (``--limit-gb``, default 8) and a timeout; a size whose smaller neighbour's measured growth
projects past the limit is not started and is recorded as "not run (memory)", never estimated.

    python benchmarks/bench_spaces.py --threads 1 --json benchmarks/results/spaces-cpu.json
    python benchmarks/bench_spaces.py --threads 1 --sizes 128x128x32 --spaces wavelet   # one row
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPACES = ("pixel", "wavelet", "latent")
SIZES = ("128x128x32", "256x256x32", "512x512x64", "512x512x128")
DEFAULT_CONFIG = "configs/demo.yaml"
TORCH_BASE_MB = 350.0  # RSS of the worker before any tensor (import torch/monai/diffusers), for the guard's projection


def _parse(size: str) -> tuple[int, int, int]:
    x, y, z = (int(v) for v in size.lower().split("x"))
    return x, y, z


# ------------------------------------------------------------------------------------------ worker
def _setup(space: str, size: str, phase: str, device, config: str, latent_channels: int):
    """Build one measurement: ``(fn, info)``, ``fn`` doing the measured work once on ``device``."""
    import torch

    from ctdiff.config import load_config
    from ctdiff.diffusion.schedule import Diffusion
    from ctdiff.model.spaces import WaveletSpace
    from ctdiff.model.unet import build_model, count_parameters

    cfg = load_config(REPO / config)
    x, y, z = _parse(size)
    torch.manual_seed(0)
    info: dict = {}
    cuda = device.type == "cuda"
    if phase in ("decode", "encode"):
        from ctdiff.model.autoencoder import AutoencoderConfig, build_autoencoder, decode, encode_mean

        ae, acfg = build_autoencoder(AutoencoderConfig(latent_channels=latent_channels))
        ae = ae.to(device).eval()
        f = acfg.downsampling
        tile = (16, 32, 32)  # sample.decode_tile's default (latent voxels); encoding uses it times the factor
        if phase == "decode":
            lat = torch.randn(1, acfg.latent_channels, z // f, y // f, x // f, device=device)
            fn = lambda: decode(ae, lat, tile)  # noqa: E731
            info.update(latent_shape=list(lat.shape), decode_tile=list(tile))
        else:
            vol = torch.randn(1, 1, z, y, x, device=device)
            fn = lambda: encode_mean(ae, vol, tuple(t * f for t in tile))  # noqa: E731
            info.update(
                latent_shape=[1, acfg.latent_channels, z // f, y // f, x // f], encode_tile=[t * f for t in tile]
            )
        info.update(parameters=sum(p.numel() for p in ae.parameters()))
        return fn, info
    if space == "pixel":
        channels, shape, encode = 1, (1, z, y, x), None
    elif space == "wavelet":
        ws = WaveletSpace((1, 1, 1))
        channels, shape, encode = ws.channels, (1, z, y, x), ws.encode
    else:  # a cached latent of AutoencoderConfig()'s 4x downsampling
        channels, shape, encode = latent_channels, (latent_channels, z // 4, y // 4, x // 4), None
    model = build_model(cfg.model, channels).to(device).to(memory_format=torch.channels_last_3d)
    diffusion = Diffusion(cfg.diffusion)
    data = torch.randn(1, *shape, device=device)
    info.update(
        network_input=[1, channels, *(encode(data).shape[2:] if encode else shape[1:])],
        parameters=count_parameters(model),
    )
    # as ctdiff's trainer runs on CUDA: bf16 autocast (train.amp); sampling runs in fp32 everywhere
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.train.amp else contextlib.nullcontext()
    info["autocast"] = "bf16" if cuda and cfg.train.amp and phase == "train" else "fp32"
    if phase == "train":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)

        def fn():
            x0 = encode(data) if encode else data
            x0 = x0.contiguous(memory_format=torch.channels_last_3d)
            t = diffusion.sample_timesteps(1, g).to(device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            with amp:
                loss = diffusion.loss(model, x0, t, noise)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return fn, info
    model.eval()
    xin = (encode(data) if encode else data).contiguous(memory_format=torch.channels_last_3d)
    t500 = torch.tensor([500], device=device)

    def fn():
        with torch.no_grad():
            model(xin, t500)

    return fn, info


def worker(
    space: str,
    size: str,
    phase: str,
    threads: int,
    reps: int,
    config: str = DEFAULT_CONFIG,
    latent_channels: int = 4,
) -> dict:
    """One CPU measurement (its own process: peak RSS is this measurement's)."""
    import torch

    torch.set_num_threads(threads)
    fn, info = _setup(space, size, phase, torch.device("cpu"), config, latent_channels)
    times, cpu = [], []
    for i in range(reps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if i or reps == 0:  # the first call is a warm-up (--reps 0: one cold, timed call)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "seconds": statistics.median(times),
        "cpu_seconds": statistics.median(cpu),
        "seconds_all": times,
        "peak_rss_mb": round(peak_mb, 1),
        **info,
    }


def measure_cuda(space: str, size: str, phase: str, reps: int, config: str, latent_channels: int) -> dict:
    """One GPU measurement, in this process: seconds (median after one warm-up, synchronised) and
    ``torch.cuda.max_memory_allocated`` from before the model is built (weights, gradients, AdamW
    state and activations). Out of memory is a result ("out of memory"), measured, not projected."""
    import gc

    import torch

    device = torch.device("cuda")
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    try:
        fn, info = _setup(space, size, phase, device, config, latent_channels)
        times = []
        for i in range(reps + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            if i or reps == 0:
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() - base
        row = {
            "status": "measured",
            "gpu_seconds": statistics.median(times),
            "gpu_seconds_all": times,
            "gpu_peak_gib": round(peak / 2**30, 3),
            "gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3),
            **info,
        }
    except torch.cuda.OutOfMemoryError:
        row = {
            "status": "out of memory",
            "gpu_peak_gib": round((torch.cuda.max_memory_allocated() - base) / 2**30, 3),
        }
    except RuntimeError as exc:  # e.g. a kernel that refuses a tensor this large: a result too, not a crash
        row = {"status": f"failed: {str(exc).splitlines()[0][:200]}"}
    fn = info = None  # noqa: F841 (free the model before the next measurement)
    gc.collect()
    torch.cuda.empty_cache()
    return row


# ------------------------------------------------------------------------------------------ driver
def _limit(gb: float):
    def set_limit():
        lim = int(gb * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    return set_limit


def run_one(space, size, phase, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        space,
        size,
        phase,
        "--threads",
        str(args.threads),
        "--reps",
        str(args.reps),
        "--config",
        args.config,
        "--latent-channels",
        str(args.latent_channels),
    ]
    # the address-space guard: what it allows is larger than the RSS (torch maps more than it touches)
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=args.timeout,
            preexec_fn=_limit(args.limit_gb + args.as_slack_gb),
        )
    except subprocess.TimeoutExpired:
        return {"status": f"not run (over {args.timeout} s)"}
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1][:200]
        status = "not run (memory)" if ("memory" in tail.lower() or "alloc" in tail.lower()) else f"failed: {tail}"
        return {"status": status}
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if row["peak_rss_mb"] > args.limit_gb * 1024:
        row["status"] = "measured (over the RSS limit)"
    else:
        row["status"] = "measured"
    return row


def project_80gb(rows: list[dict], space: str) -> dict | None:
    """Least-squares line peak RSS ~ a + b * voxels over the measured train rows -> the largest
    512 x 512 x Z volume within 80 GB. A projection from CPU RSS, not a GPU measurement."""
    pts = [
        (r["voxels"], r["peak_rss_mb"])
        for r in rows
        if r["space"] == space and r["phase"] == "train" and r["status"].startswith("measured")
    ]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / max(1e-12, sum((p[0] - mx) ** 2 for p in pts))
    a = my - b * mx
    budget_mb = 80 * 1024
    if b <= 0:
        return {"kind": "projection from measured CPU peak RSS", "note": "no growth with the voxel count measured"}
    vox = (budget_mb - a) / b
    z = int(vox // (512 * 512))
    return {
        "mb_per_megavoxel": round(b * 1e6, 1),
        "intercept_mb": round(a, 1),
        "max_voxels": int(vox),
        "max_512x512_slices": z,
        "fits_512x512x128": z >= 128,
        "rss_512x512x128_mb": round(a + b * 512 * 512 * 128, 0),
        "kind": "projection from measured CPU peak RSS",
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", nargs=3, metavar=("SPACE", "SIZE", "PHASE"), help=argparse.SUPPRESS)
    p.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES)
    p.add_argument("--sizes", nargs="+", default=list(SIZES), help="XxYxZ volumes (default: the issue's four)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=1, help="timed repetitions after one warm-up (0: one cold call, timed)")
    p.add_argument("--limit-gb", type=float, default=8.0, help="peak RSS allowed per measurement")
    p.add_argument("--as-slack-gb", type=float, default=4.0, help="address space allowed beyond --limit-gb")
    p.add_argument("--timeout", type=int, default=2400, help="seconds per measurement")
    p.add_argument(
        "--cpu-budget",
        type=float,
        default=240.0,
        help="CPU seconds a measurement may take (warm-up included), projected from the next smaller size",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help="the config whose U-Net is measured (repo-relative)")
    p.add_argument("--latent-channels", type=int, default=4, help="latent space: the autoencoder's latent channels")
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="cuda: every measurement in one process, torch.cuda.max_memory_allocated, no guards (OOM is a result)",
    )
    p.add_argument(
        "--find-max",
        nargs="*",
        type=int,
        metavar="Z",
        default=None,
        help="(cuda) also train steps at 512x512xZ for these Z, per space, until out of memory: the largest volume",
    )
    p.add_argument("--json", default=None)
    p.add_argument("--table", metavar="JSON", help="print the markdown table of a results file and exit")
    p.add_argument("--gpu-json", metavar="JSON", help="with --table: the --device cuda results for the GPU column")
    args = p.parse_args()
    if args.table:
        gpu = json.loads(Path(args.gpu_json).read_text()) if args.gpu_json else None
        result = json.loads(Path(args.table).read_text())
        print(markdown_gpu(result) if result.get("device") == "cuda" else markdown(result, gpu))
        return 0
    if args.worker:
        out = worker(
            *args.worker, threads=args.threads, reps=args.reps, config=args.config, latent_channels=args.latent_channels
        )
        print(json.dumps(out))
        return 0
    if args.device == "cuda":
        return main_cuda(args)

    rows: list[dict] = []
    started = time.time()
    prev: dict[tuple[str, str], dict] = {}
    jobs = [
        (size, space, phase)
        for size in sorted(args.sizes, key=lambda s: _prod(_parse(s)))
        for space in args.spaces
        for phase in _phases(space)
    ]
    for size, space, phase in jobs:  # size by size, so a stopped run still has every space's small sizes
        vox = _prod(_parse(size))
        row = {
            "space": space,
            "phase": phase,
            "size": size,
            "voxels": vox,
            "threads": args.threads,
            "command": _command(args, space, size),
        }
        last = prev.get((space, phase))
        if last is not None and last.get("status", "").startswith("not run"):
            row["status"] = last["status"]
        elif last is not None and last.get("status") == "measured":
            # the guards: grow the measured growth above torch's own RSS, and the CPU time, with the voxel count
            ratio = vox / last["voxels"]
            grown = TORCH_BASE_MB + max(0.0, last["peak_rss_mb"] - TORCH_BASE_MB) * ratio
            cpu = last["cpu_seconds"] * ratio * (args.reps + 1)
            if grown > args.limit_gb * 1024:
                row["status"] = "not run (memory)"
                row["guard_projection_mb"] = round(grown)
            elif cpu > args.cpu_budget:
                row["status"] = f"not run (time: over the {args.cpu_budget:.0f} CPU-s budget)"
                row["guard_projection_cpu_seconds"] = round(cpu)
        if "status" not in row:
            row.update(run_one(space, size, phase, args))
        print(json.dumps({k: v for k, v in row.items() if k != "command"}), flush=True)
        rows.append(row)
        prev[(space, phase)] = row
        if args.json:
            _write(args, rows, started)
    result = (
        _write(args, rows, started)
        if args.json
        else {"projection_80gb": {s: project_80gb(rows, s) for s in args.spaces}}
    )
    print(json.dumps(result["projection_80gb"], indent=1))
    return 0


def _phases(space: str) -> tuple[str, ...]:
    return ("train", "eval", "decode", "encode") if space == "latent" else ("train", "eval")


def _command(args, space: str, size: str) -> str:
    extra = "" if args.config == DEFAULT_CONFIG else f" --config {args.config}"
    extra += "" if args.latent_channels == 4 else f" --latent-channels {args.latent_channels}"
    dev = " --device cuda" if args.device == "cuda" else f" --threads {args.threads}"
    return f"python benchmarks/bench_spaces.py{dev}{extra} --spaces {space} --sizes {size}"


def main_cuda(args) -> int:
    """All measurements on the GPU in this process; then, with --find-max, 512x512xZ training steps per
    space until the first out-of-memory: the largest volume that trains at batch 1 on this card."""
    import torch

    if not torch.cuda.is_available():
        print("bench_spaces: --device cuda: no CUDA device", file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    gpu = {"name": props.name, "total_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__}
    rows: list[dict] = []
    started = time.time()

    def record(row: dict) -> None:
        print(json.dumps({k: v for k, v in row.items() if k not in ("command", "gpu_seconds_all")}), flush=True)
        rows.append(row)
        if args.json:
            _write(args, rows, started, gpu)

    jobs = [
        (size, space, phase)
        for size in sorted(args.sizes, key=lambda s: _prod(_parse(s)))
        for space in args.spaces
        for phase in _phases(space)
    ]
    for size, space, phase in jobs:
        row = {"space": space, "phase": phase, "size": size, "voxels": _prod(_parse(size))}
        row["command"] = _command(args, space, size)
        row.update(measure_cuda(space, size, phase, args.reps, args.config, args.latent_channels))
        record(row)
    # latent first: the default space, and the one a cut-short run must not lose
    for space in sorted(args.spaces, key=SPACES.index, reverse=True) if args.find_max is not None else ():
        for z in args.find_max or (128, 256, 384, 512, 768, 1024):
            size = f"512x512x{z}"
            row = {"space": space, "phase": "train", "size": size, "voxels": 512 * 512 * z, "find_max": True}
            row["command"] = _command(args, space, size)
            row.update(measure_cuda(space, size, "train", 0, args.config, args.latent_channels))
            record(row)
            if row["status"] != "measured":
                break
    if not args.json:
        print(json.dumps(largest_trained(rows), indent=1))
    return 0


def largest_trained(rows: list[dict]) -> dict:
    """Per space, the largest volume whose training step ran on the GPU, and the first that did not."""
    out: dict = {}
    for r in rows:
        if r["phase"] != "train":
            continue
        cur = out.setdefault(r["space"], {"largest_trained": None, "largest_gib": None, "first_not_trained": None})
        if r["status"] == "measured":
            if cur["largest_trained"] is None or r["voxels"] > _prod(_parse(cur["largest_trained"])):
                cur["largest_trained"], cur["largest_gib"] = r["size"], r["gpu_peak_gib"]
        elif cur["first_not_trained"] is None or r["voxels"] < _prod(_parse(cur["first_not_trained"])):
            cur["first_not_trained"] = r["size"]
    return out


def _gpu_cell(gpu: dict | None, r: dict) -> str:
    if gpu is None:
        return "not yet measured on GPU"
    for g in gpu["rows"]:
        if (g["space"], g["phase"], g["size"]) == (r["space"], r["phase"], r["size"]) and not g.get("find_max"):
            if g["status"] != "measured":
                return f"{g['status']} ({gpu['gpu']['name']})"
            return f"{g['gpu_seconds']:.3f} s, {g['gpu_peak_gib']:.2f} GiB"
    return "not measured on GPU"


def markdown(result: dict, gpu: dict | None = None) -> str:
    """The docs table: one row per space, phase and size, with the command that measures it."""
    lines = [
        "| space | phase | volume (x y z) | network input (N C D H W) | CPU s (1 thread) | wall s | peak RSS GB | GPU | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        shape = r.get("network_input") or r.get("latent_shape") or ""
        if r["status"].startswith("measured"):
            cpu, wall, rss = f"{r['cpu_seconds']:.2f}", f"{r['seconds']:.1f}", f"{r['peak_rss_mb'] / 1024:.2f}"
        else:
            cpu = wall = rss = r["status"]
        shape = "x".join(str(v) for v in shape) if shape else ""
        lines.append(
            f"| {r['space']} | {r['phase']} | {r['size']} | {shape} | {cpu} | {wall} | {rss} | "
            f"{_gpu_cell(gpu, r)} | `{r['command']}` |"
        )
    if gpu is not None:  # the GPU rows the table above has no line for (find-max steps, encode, ...)
        shown = {(r["space"], r["phase"], r["size"]) for r in result["rows"]}
        lines += ["", markdown_gpu(gpu, skip=shown)]
    lines.append("")
    lines.append(
        "Projection to an 80 GB card (a line through the measured CPU peak RSS of the training step vs voxels; "
        "a projection, not a measurement):"
    )
    lines.append("")
    for space, proj in result.get("projection_80gb", {}).items():
        if not proj or "max_voxels" not in proj:
            lines.append(f"- {space}: too few measured sizes to project")
            continue
        lines.append(
            f"- {space}: {proj['mb_per_megavoxel']:.0f} MB per megavoxel -> about {proj['max_512x512_slices']} slices "
            f"of 512x512 in 80 GB; 512x512x128 projected at {proj['rss_512x512x128_mb'] / 1024:.0f} GB "
            f"({'fits' if proj['fits_512x512x128'] else 'does not fit'})"
        )
    return "\n".join(lines)


def markdown_gpu(gpu: dict, skip: set | frozenset = frozenset()) -> str:
    """The GPU-only tables of one ``--device cuda`` results file: every measured row (the find-max
    steps included; ``skip``: (space, phase, size) of rows shown elsewhere, find-max steps never
    skipped) and, per space, the largest volume that trained."""
    g = gpu["gpu"]
    lines = [
        f"GPU: {g['name']} ({g['total_gib']} GiB), torch {g['torch']}, network of `{gpu['model']}`"
        + (f" with {gpu['latent_channels']} latent channels" if gpu.get("latent_channels", 4) != 4 else "")
        + "; training steps under bf16 autocast (as `ctdiff train` on CUDA), evaluation, encode and decode in fp32.",
        "",
        "| space | phase | volume (x y z) | network input (N C D H W) | GPU s | GPU peak GiB (max_memory_allocated) |",
        "|---|---|---|---|---|---|",
    ]
    for r in gpu["rows"]:
        if (r["space"], r["phase"], r["size"]) in skip and not r.get("find_max"):
            continue
        shape = r.get("network_input") or r.get("latent_shape") or ""
        shape = "x".join(str(v) for v in shape) if shape else ""
        if r["status"] == "measured":
            secs = f"{r['gpu_seconds']:.3f}" + (" (one cold step)" if r.get("find_max") else "")
            mem = f"{r['gpu_peak_gib']:.2f}"
        else:
            secs, mem = r["status"], (f"{r['gpu_peak_gib']:.1f} when it ran out" if "gpu_peak_gib" in r else "")
        lines.append(f"| {r['space']} | {r['phase']} | {r['size']} | {shape} | {secs} | {mem} |")
    lines += ["", "Largest volume whose batch-1 training step ran on this card (measured, not projected):", ""]
    for space, m in gpu.get("largest_trained", {}).items():
        nxt = f"; {m['first_not_trained']} did not" if m.get("first_not_trained") else "; the largest size tried"
        if m["largest_trained"] is None:
            lines.append(f"- {space}: no size trained ({m['first_not_trained']} did not)")
        else:
            lines.append(f"- {space}: {m['largest_trained']} ({m['largest_gib']:.1f} GiB){nxt}")
    return "\n".join(lines)


def _write(args, rows: list[dict], started: float, gpu: dict | None = None) -> dict:
    from ctdiff.atomic import write_json

    result = {
        "benchmark": "bench_spaces",
        "host": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "load_average_1min": round(os.getloadavg()[0], 1),
        },
        "model": "configs/demo.yaml U-Net (channels 8-16-32-64, 1 res block, attention at the coarsest level)",
        "limit_gb": args.limit_gb,
        "cpu_budget_seconds": args.cpu_budget,
        "seconds_total": round(time.time() - started, 1),
        "rows": rows,
        "projection_80gb": {s: project_80gb(rows, s) for s in args.spaces} if gpu is None else None,
        "gpu": "not yet measured on GPU",
    }
    if gpu is not None:  # --device cuda: measured on this GPU (no CPU projection)
        result.update(
            device="cuda",
            gpu=gpu,
            model=args.config,
            latent_channels=args.latent_channels,
            reps=args.reps,
            largest_trained=largest_trained(rows),
        )
        del result["projection_80gb"], result["limit_gb"], result["cpu_budget_seconds"]
    write_json(Path(args.json), result)
    return result


def _prod(t) -> int:
    out = 1
    for v in t:
        out *= v
    return out


if __name__ == "__main__":
    raise SystemExit(main())
