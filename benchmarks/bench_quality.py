#!/usr/bin/env python3
"""Quality at equal cost (issue 20, benchmark a): pixel vs wavelet vs latent, then DDPM vs rflow.

Every arm trains ``configs/demo-128.yaml``'s U-Net with ``python -m ctdiff`` on the same 128x128x32
phantom cohort, within the same wall-clock budget on this machine, then samples 12 volumes with 25
network evaluations and is reported by ``python -m eval report`` against 12 held-out phantoms (the
floor: held-out vs the training cohort). The arms:

- ``pixel``: ``model.space=pixel`` (every arm but ``-rflow`` sets ``diffusion.kind=ddpm``: the
  preset's own kind is rflow since it became the demo's recipe);
- ``wavelet``: ``model.space=wavelet`` (one Haar level per axis) with ``model.wavelet_scale=band``;
- ``latent``: ``python -m ctdiff train-autoencoder`` first (its wall clock counts against the
  budget: ``--ae-share`` of it), then diffusion on its cached latents;
- ``<best>-rflow``: the best of the three (lowest median gap over the report's metrics) again with
  ``diffusion.kind=rflow`` and the Euler sampler.

How the budget is kept: it counts the training commands' CPU seconds divided by the threads they
use (2), i.e. the wall clock they would take alone on 2 idle cores; the wall clock is recorded too.
(Counted so, a pause of the benchmark, SIGSTOP, or another job on the machine does not eat an arm's
budget.) A probe of 2 epochs (24 steps; within the 100 warm-up steps, so the cosine
schedule has not started) measures the seconds per step, the run is then resumed with as many epochs
as fit the rest of the budget, so its learning-rate schedule ends when the budget does. Start-up is
counted; sampling and evaluation are not.
The autoencoder's share is handled the same way (a 30-step probe, then ``--resume --set steps=N``).

Every stage is skipped when its output is complete, so the benchmark resumes after an interruption
(run the same command again); training stages resume their run dir.

    python benchmarks/bench_quality.py --train-data data/ph128-train --held-out data/ph128-held \\
        --work runs/quality --budget-min 20 --json benchmarks/results/quality-equal-cost.json

``--radiomics`` adds the radiomics family (FRD, KID, PRDC) to every arm's report (an arm reported
without it is reported again; trainings are kept). ``--arms latent-rflow --no-rflow`` runs one arm.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo-128.yaml"


def _config_window() -> tuple[float, float]:
    from ctdiff.config import load_config

    lo, hi = load_config(CONFIG).data.hu_window
    return float(lo), float(hi)


FAST = "intensity,noise,texture,similarity,memorization"
PROBE_EPOCHS = 2


def _cmd(text: str) -> list[str]:
    """``python <text>`` as an argument list (paths here have no spaces: checked in main)."""
    return [sys.executable, *text.split()]


def _run(cmd: list[str], log: Path, threads: int = 2) -> tuple[float, float]:
    """Run ``cmd`` (from the repo root), appending its output to ``log``.

    Returns (wall seconds, CPU seconds / ``threads``): the second is what the budget counts, the
    wall clock the command would take alone on ``threads`` idle cores; unlike the wall clock here it
    does not grow while the benchmark is paused (SIGSTOP) or shares the cores with other jobs.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        rc = subprocess.call(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise SystemExit(f"bench_quality: command failed (rc {rc}), see {log}: {' '.join(cmd)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu / threads


def _history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


class Arm:
    def __init__(self, name: str, sets: list[str], work: Path, args) -> None:
        self.name, self.sets, self.args = name, sets, args
        self.dir = work / name
        self.run = self.dir / "run"
        self.gen = self.dir / "generated"
        self.report = self.dir / "report"
        self.state_file = self.dir / "state.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.is_file() else {"train_cost": []}

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(self.state, indent=1))

    def timed(self, key: str, cmd: list[str]) -> None:
        wall, cost = _run(cmd, self.dir / "log.txt", self.args.threads)
        self.state["train_cost"].append([key, round(wall, 1), round(cost, 1)])
        self.state.setdefault("commands", []).append(" ".join(cmd))
        self.save()

    @property
    def spent(self) -> float:
        """Budget used so far: CPU seconds / threads of every training command (see _run)."""
        return sum(c for _, _, c in self.state["train_cost"])

    # ------------------------------------------------------------------ autoencoder (latent only)
    def autoencoder(self, budget_s: float) -> str:
        ae = self.dir / "ae"
        a = self.args
        lo, hi = _config_window()  # the autoencoder learns the diffusion config's HU window (train checks it)
        common = f"--set hu_window=[{lo:g},{hi:g}] --threads {a.threads} --no-progress"
        if "ae_done" not in self.state:
            if "ae_probe" not in self.state:
                self.timed(
                    "ae probe",
                    _cmd(
                        f"-m ctdiff train-autoencoder --data {a.train_data} --out {ae} --set steps=30 {common} --force"
                    ),
                )
                self.state["ae_probe"] = json.loads((ae / "eval.json").read_text())["train_seconds_this_call"] / 30
                self.save()
            per_step = self.state["ae_probe"]
            steps = max(30, int((budget_s * a.ae_share - self.spent) / per_step))
            self.timed(
                "ae",
                _cmd(f"-m ctdiff train-autoencoder --out {ae} --resume --set steps={steps} {common}"),
            )
            self.state["ae_done"] = json.loads((ae / "eval.json").read_text())
            self.save()
        return f"--set model.autoencoder={ae / 'autoencoder.pt'}"

    # ------------------------------------------------------------------ diffusion training
    def train(self, budget_s: float) -> None:
        a = self.args
        common = f"--threads {a.threads} --no-progress"
        sets = " ".join(f"--set {s}" for s in self.sets)
        if self.name.startswith("latent"):
            sets += " " + self.autoencoder(budget_s)
        if "probe_s_per_step" not in self.state:
            self.timed(
                "probe",
                _cmd(
                    f"-m ctdiff train --config {CONFIG} --data {a.train_data} --out {self.run} {sets} "
                    f"--set train.epochs={PROBE_EPOCHS} --set train.preview_every=0 {common} --force"
                ),
            )
            rows = _history(self.run)
            steps = int(rows[-1]["step"])
            self.state["probe_s_per_step"] = sum(float(r["seconds"]) for r in rows) / steps
            self.state["steps_per_epoch"] = steps // len(rows)
            self.save()
        if "trained" not in self.state:
            epochs = plan_epochs(budget_s, self.spent, self.state["probe_s_per_step"], self.state["steps_per_epoch"])
            self.state["planned_epochs"] = epochs
            self.save()
            self.timed(
                "train",
                _cmd(
                    f"-m ctdiff train --out {self.run} --resume --set train.epochs={epochs} --set train.preview_every=0 {common}"
                ),
            )
            rows = _history(self.run)
            self.state["trained"] = {
                "steps": int(rows[-1]["step"]),
                "epochs": len(rows),
                "best_val": min((float(r["val_loss"]) for r in rows if r["val_loss"]), default=None),
                "step_seconds_sum": round(sum(float(r["seconds"]) for r in rows), 1),
                "train_cost_s": round(self.spent, 1),
                "train_wall_s": round(sum(w for _, w, _ in self.state["train_cost"]), 1),
            }
            self.save()

    # ------------------------------------------------------------------ sampling and report
    def sample_and_report(self) -> None:
        a = self.args
        if "sample_wall_s" not in self.state:
            # the sampler is the config's: ancestral DDPM, or Euler for diffusion.kind=rflow
            wall, _ = _run(
                _cmd(
                    f"-m ctdiff sample --run {self.run} --n 12 --steps 25 --seed 1000 --batch-size 4 "
                    f"--threads {a.threads} --out {self.gen} --force"
                ),
                self.dir / "log.txt",
            )
            self.state["sample_wall_s"] = round(wall, 1)
            self.save()
        metrics = report_metrics(a.radiomics)
        # a report with fewer metrics than asked for (e.g. one made before --radiomics) is made again
        if "report" not in self.state or self.state.get("report_metrics", FAST) != metrics:
            cache = f" --cache-dir {a.cache_dir}" if a.cache_dir else ""
            _run(
                _cmd(
                    f"-m eval report --real {a.held_out} --generated {self.gen} --train {a.train_data} "
                    f"--out {self.report} --metrics {metrics} --workers {a.threads}{cache} --force"
                ),
                self.dir / "log.txt",
            )
            self.state["report"] = _metrics(self.report / "report.json")
            self.state["report_metrics"] = metrics
            self.save()


def report_metrics(radiomics: bool) -> str:
    """The report's ``--metrics``: the fast families, plus radiomics (FRD, KID, MMD, precision, recall,
    density, coverage: minutes of feature extraction per dozen scans) with ``--radiomics``."""
    return f"{FAST},radiomics" if radiomics else FAST


def _metrics(path: Path) -> dict:
    out = json.loads(path.read_text())["metrics"]
    keep = ("value", "ci95", "real", "real_ci95", "generated", "floor", "floor_basis", "gap", "status", "unit")
    return {k: {f: v.get(f) for f in keep} for k, v in out.items() if isinstance(v, dict)}


def plan_epochs(budget_s: float, spent_s: float, s_per_step: float, steps_per_epoch: int) -> int:
    """Total epochs for the run after its probe: the probe's epochs plus as many as the rest of the
    budget pays for at the probe's pace (at least one more). The run's own start-up (imports, data,
    model: seconds) is counted when it happens, not planned for."""
    per_epoch = s_per_step * steps_per_epoch
    if not (per_epoch > 0 and math.isfinite(per_epoch)):
        raise ValueError(f"the probe's pace must be a positive number, got {s_per_step} s/step")
    return PROBE_EPOCHS + max(1, int((budget_s - spent_s) / per_epoch))


def median_gap(metrics: dict) -> float:
    gaps = [m["gap"] for m in metrics.values() if isinstance(m.get("gap"), (int, float)) and math.isfinite(m["gap"])]
    return statistics.median(gaps) if gaps else math.inf


TABLE_METRICS = (
    "noise_sd",
    "cnr_soft_tissue_fat",
    "hu_wasserstein",
    "nps_distance",
    "glcm_distance",
    "ssim_nearest_real",
    "ms_ssim_diversity",
    "frd",
    "kid",
    "precision",
    "recall",
    "density",
    "coverage",
    "memorization",
)


def table(result: dict) -> str:
    """Markdown: one row per arm (cost, steps) and one per metric (value [CI], gap, status) per arm."""

    def num(x, fmt="{:.3g}"):
        return "—" if x is None else fmt.format(x)

    arms = result["arms"]
    lines = [
        "| arm | training cost (2-core min) | wall (min) | steps | best val loss | sampling 12 (s) | median gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, a in arms.items():
        t = a.get("trained", {})
        lines.append(
            f"| {name} | {num(t.get('train_cost_s', 0) / 60, '{:.1f}')} | {num(t.get('train_wall_s', 0) / 60, '{:.1f}')} "
            f"| {t.get('steps', '—')} | {num(t.get('best_val'))} | {num(a.get('sample_wall_s'), '{:.0f}')} "
            f"| {num(a.get('median_gap'), '{:.1f}')} |"
        )
    lines += ["", "| metric | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for m in TABLE_METRICS:
        cells = []
        for a in arms.values():
            e = a.get("report", {}).get(m)
            if not e:
                cells.append("—")
                continue
            ci = e.get("ci95") or [None, None]
            inside = ""
            if e.get("real_ci95") and e.get("value") is not None:  # issue 20: inside the real cohort's 95 % CI?
                lo, hi = e["real_ci95"]
                inside = f"; {'inside' if lo <= e['value'] <= hi else 'outside'} real CI [{num(lo)}, {num(hi)}]"
            cells.append(
                f"{num(e.get('value'))} [{num(ci[0])}, {num(ci[1])}] gap {num(e.get('gap'), '{:.1f}')} "
                f"{e.get('status')}{inside}"
            )
        if all(c == "—" for c in cells):
            continue  # e.g. radiomics metrics in a table of arms reported without --radiomics
        real = next((a["report"][m].get("real") for a in arms.values() if a.get("report", {}).get(m)), None)
        lines.append(f"| {m}{'' if real is None else f' (real {real:.3g})'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-data", type=Path)
    p.add_argument("--held-out", type=Path)
    p.add_argument("--work", type=Path, help="run dirs, samples, reports (resumable)")
    p.add_argument("--budget-min", type=float, default=20.0, help="training wall clock per arm, minutes")
    p.add_argument("--ae-share", type=float, default=0.4, help="latent arm: the autoencoder's share of the budget")
    p.add_argument("--arms", default="pixel,wavelet,latent", help="comma list; an arm may end in -rflow")
    p.add_argument("--no-rflow", action="store_true", help="skip the DDPM-vs-rflow arm on the best space")
    p.add_argument(
        "--radiomics",
        action="store_true",
        help="report the radiomics family too (FRD, KID, PRDC); an arm reported without it is reported again",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="eval's feature cache (default: eval's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--table", action="store_true", help="print the markdown table of --json and stop")
    args = p.parse_args()
    if args.table:
        if args.json is None:
            p.error("--table needs --json")
        print(table(json.loads(args.json.read_text())))
        return 0
    if args.train_data is None or args.held_out is None or args.work is None:
        p.error("--train-data, --held-out and --work are needed")
    if not (args.budget_min > 0 and 0 < args.ae_share < 1):
        p.error("--budget-min must be > 0 and --ae-share in (0, 1)")
    if any(" " in str(x) for x in (args.train_data, args.held_out, args.work.resolve(), REPO, sys.executable)):
        p.error("paths with spaces are not supported by this benchmark script")
    budget_s = args.budget_min * 60
    spaces = {
        "pixel": ["model.space=pixel"],
        "wavelet": ["model.space=wavelet", "model.wavelet_scale=band"],
        "latent": ["model.space=latent"],
    }
    arms = {}
    for name in args.arms.split(","):
        base, _, objective = name.partition("-")  # "latent-rflow": that space with rectified flow
        if base not in spaces or objective not in ("", "rflow"):
            p.error(f"--arms: unknown arm {name!r} (pixel, wavelet, latent, optionally with -rflow)")
        arm = Arm(name, [*spaces[base], f"diffusion.kind={objective or 'ddpm'}"], args.work, args)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: train", flush=True)
        arm.train(budget_s)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: sample + report", flush=True)
        arm.sample_and_report()
        arms[name] = arm
    best = min(arms, key=lambda n: median_gap(arms[n].state["report"]))
    if not args.no_rflow and not best.endswith("-rflow") and f"{best}-rflow" not in arms:
        name = f"{best}-rflow"
        arm = Arm(name, [*spaces[best], "diffusion.kind=rflow"], args.work, args)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: train", flush=True)
        arm.train(budget_s)
        arm.sample_and_report()
        arms[name] = arm
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "budget_min": args.budget_min,
        "config": str(CONFIG.relative_to(REPO)),
        "train_data": str(args.train_data),
        "held_out": str(args.held_out),
        "report_metrics": report_metrics(args.radiomics),
        "best_space": best,
        "arms": {n: {**a.state, "median_gap": median_gap(a.state["report"])} for n, a in arms.items()},
    }
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
