"""Build the built-in demo workspace: phantom real scans, generated scans, a report, a review session.

The demo shows the whole product on ctdiff's own material, offline: a model trained by
``python -m ctdiff train`` on the phantom cohort ships in ``ctdiff_app/demo/assets/`` (EMA weights in
fp16, its config, split, history and loss plot) together with volumes it generated, so the first
start needs no sampling. :func:`ensure_demo_workspace` writes ``workspace/demo/``:

- ``train/``: the phantom cohort the demo model was trained on (regenerated from its seed),
- ``real/``: held-out phantom scans (another seed) the model never saw,
- ``generated/``: the shipped samples and their manifest,
- ``run/``: the demo run dir (config, split, history, loss plot, ``checkpoints/best.pt``),
- ``report/``: ``python -m eval report --real real --generated generated --train train``,
- ``reviews.sqlite``: a blinded review session with a demo reader code,
- ``real-ct/``: two real scanner CT scans (:mod:`ctdiff.data.realct`) when they can be fetched or are
  cached; otherwise ``workspace.json`` says why they are missing and the demo works without them,
- ``workspace.json``: what was built, from what, and the demo reader code.

The whole workspace is written into a hidden temporary sibling folder (``.demo.partial-XXXX``,
:func:`ctdiff.outputs.staged_output`, as every batch command) and renamed onto its name at the end;
``workspace.json`` (with ``"complete": true``) is written last inside it and is the completion mark.
A build that fails, is interrupted or killed leaves no visible workspace (or the previous one, on
``--force``). Everything the workspace stores is location-independent: the report, the review
database and ``workspace.json`` name the workspace's files by paths relative to the file that holds
them, so the finished folder can be renamed into place (and moved later). :func:`demo_state`
decides what a start does: a finished workspace is reused; a missing or empty folder, an unfinished
build (a ``.building`` marker left by builds made in place before builds were staged), or a folder
that holds only ctdiff's own caches (``review-cache/``, ``.cache/``) is (re)built, and the caller is
told why; a folder with anything else in it (a user's files) is never deleted, not even with ``--force``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ctdiff.atomic import write_json, write_text
from ctdiff.config import config_from_dict, saved_config_values
from ctdiff.errors import InputError, OverwriteError
from ctdiff.locations import DEFAULT_WORKSPACE as LOCATIONS_DEFAULT_WORKSPACE
from ctdiff.model.checkpoint import BEST
from ctdiff.outputs import DEMO_CACHES, is_demo_build, register_output
from ctdiff.training.rundir import RunDir

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_WORKSPACE = LOCATIONS_DEFAULT_WORKSPACE  # workspace/demo in the current folder
WORKSPACE_JSON = "workspace.json"
BUILDING = ".building"  # the unfinished-build marker of in-place builds (older versions); still recognised
DEMO_READER_CODE = "demo-reader"
REAL_SEED = 1  # held-out scans: another seed than the training cohort's
REAL_N = 12
REVIEW_PER_COHORT = 6
# folders ctdiff writes into a workspace as caches (rebuildable, never a user's data)
CACHE_ENTRIES = DEMO_CACHES
REAL_CT_ENV = "CTDIFF_DEMO_REAL_CT"  # "0": build the demo without fetching the real CT scans

Progress = Callable[..., None]


register_output("demo-assets", "a demo assets folder", lambda folder: (folder / "assets.json").is_file())


def _assets_info() -> dict[str, Any]:
    path = ASSETS / "assets.json"
    if not path.is_file():
        raise InputError("demo assets are missing (scripts/make_demo_assets.py writes them)", path)
    return json.loads(path.read_text())


def is_complete(workspace: str | os.PathLike) -> bool:
    """True when ``workspace`` holds a finished demo build."""
    try:
        info = json.loads((Path(workspace) / WORKSPACE_JSON).read_text())
    except (OSError, ValueError):
        return False
    return bool(info.get("complete"))


def demo_state(workspace: str | os.PathLike) -> tuple[str, str]:
    """What a start does with ``workspace``: ``(action, why)``, action one of

    - ``"reuse"``: a finished demo build (its ``workspace.json`` says ``complete``);
    - ``"build"``: the folder is missing or empty;
    - ``"rebuild"``: an unfinished demo build, or a folder that holds only ctdiff's caches;
    - ``"refuse"``: the folder holds other files, e.g. a user's own workspace with its free-form
      ``workspace.json`` (never deleted, not even with ``--force``).
    """
    ws = Path(workspace)
    if is_complete(ws):
        return "reuse", f"{ws} holds a finished demo workspace"
    if not ws.exists():
        return "build", f"{ws} does not exist yet"
    if not ws.is_dir():
        return "refuse", f"{ws} is a file, not a folder"
    names = sorted(p.name for p in ws.iterdir())
    if not names:
        return "build", f"{ws} is empty"
    if is_demo_build(ws):  # the demo's own workspace.json or .building, not a user's workspace.json
        return "rebuild", f"{ws} holds an unfinished demo build (interrupted earlier); rebuilding it"
    if all(n in CACHE_ENTRIES for n in names):
        return "rebuild", (
            f"{ws} holds only ctdiff caches ({', '.join(n + '/' for n in names)}) and no finished demo; rebuilding it"
        )
    other = [n for n in names if n not in CACHE_ENTRIES]
    shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
    return "refuse", f"{ws} holds files that are not ctdiff's ({shown})"


def stale_reason(workspace: str | os.PathLike) -> str | None:
    """Why a finished demo workspace does not show the demo model this version ships, or None.

    A workspace is reused as built (:func:`demo_state`), so after an update that ships a new demo
    model, the old one's samples, report and run stay on screen. Its ``workspace.json`` records the
    model it was built from (assets.json's ``model``); a different record is told here, with the
    command that rebuilds it. Not rebuilt on its own: that would replace the demo's review answers.
    """
    try:
        info = json.loads((Path(workspace) / WORKSPACE_JSON).read_text())
        shipped = _assets_info().get("model", {})
    except (OSError, ValueError, InputError):
        return None
    if not isinstance(info, dict) or not info.get("complete") or info.get("name") != "demo":
        return None
    built = info.get("model") or {}
    if built == shipped:
        return None

    def describe(model: dict[str, Any]) -> str:
        if "trained_steps" not in model:
            return "no record"
        weights = f", weights {model['sha256'][:12]}" if model.get("sha256") else ""
        return f"{model['trained_steps']} training steps{weights}"

    return (
        f"built from another demo model ({describe(built)}) than this version ships ({describe(shipped)}); "
        f"`python -m ctdiff_app demo --force --out {workspace}` rebuilds it (its review answers are replaced)"
    )


def ensure_demo_workspace(
    path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    force: bool = False,
    report: bool | str = True,
) -> Path:
    """Build the demo workspace at ``path`` (default ``workspace/demo``) unless it is already built.

    ``progress(done, total, message)`` reports each stage. With ``force`` an existing workspace is
    rebuilt. ``report``: True copies the report shipped with the assets (computed on exactly these
    inputs), ``"recompute"`` runs ``eval report`` again (minutes on 2 cores), False skips it.
    """
    ws = Path(path) if path is not None else DEFAULT_WORKSPACE
    action, why = demo_state(ws)
    if action == "reuse" and not force:
        return ws
    from ctdiff.outputs import check_no_overlap, staged_output
    from eval.review.db import dispose_engine

    check_no_overlap(ws, {"demo assets": ASSETS})
    if action == "refuse":
        # a folder of someone else's files is never deleted, not even with --force: --force replaces
        # only a demo workspace (finished, or a build that did not finish)
        raise OverwriteError(
            f"exists and is not a demo workspace ({why.removeprefix(str(ws) + ' ')}); "
            "it is left as it is: choose another folder (--force replaces only a demo workspace)",
            ws,
        )
    info = _assets_info()
    stages = 7 if report else 6
    if action == "rebuild" and progress is not None:
        progress(0, stages, why)
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, stages, message)
        done += 1

    try:
        # force: demo_state has refused a user's folder above; staged_output checks again, with
        # outputs.WRITTEN_BY["demo"] (a demo build, finished or not, or only ctdiff's caches), just
        # before it renames the finished folder onto ``ws``
        with staged_output(ws, command="demo", force=True, inputs={"demo assets": ASSETS}) as tmp:
            try:
                _build(tmp, info, tick, report)
            finally:
                # SQLite finds its -wal/-shm files by the database's name: close our connections
                # before the folder is renamed (or removed)
                dispose_engine(f"sqlite:///{tmp / REVIEW_DB}")
                dispose_engine(f"sqlite:///{ws / REVIEW_DB}")
            if not force and is_complete(ws):
                raise _BuiltMeanwhile
    except _BuiltMeanwhile:
        pass  # another start (a second app session) finished the same workspace first: keep it
    if progress is not None:
        progress(stages, stages, "demo workspace ready")
    return ws


class _BuiltMeanwhile(Exception):
    """Another process finished the workspace while this one built it (this build is dropped)."""


def _build(ws: Path, info: dict[str, Any], tick: Callable[[str], None], report: bool | str) -> None:
    """Write every part into ``ws`` (the staging folder), ``workspace.json`` last. Nothing written
    names ``ws`` itself: paths are relative (the folder is renamed when finished)."""
    from ctdiff.data.phantom import write_cohort

    cohort = info["train_cohort"]
    shape = tuple(cohort["shape"])
    tick(f"phantom training cohort ({cohort['n']} scans, seed {cohort['seed']})")
    write_cohort(
        ws / "train", n=cohort["n"], shape=shape, seed=cohort["seed"], noise_hu=cohort["noise_hu"], progress=False
    )
    tick(f"held-out phantom scans ({REAL_N}, seed {REAL_SEED})")
    write_cohort(ws / "real", n=REAL_N, shape=shape, seed=REAL_SEED, noise_hu=cohort["noise_hu"], progress=False)
    tick("generated scans and the demo model")
    shutil.copytree(ASSETS / "samples", ws / "generated")
    run = RunDir(ws / "run")
    run.checkpoints.mkdir(parents=True)
    for name in (RunDir.CONFIG, RunDir.SPLIT, RunDir.HISTORY, RunDir.LOSS_PLOT):
        if (ASSETS / "run" / name).exists():
            shutil.copy2(ASSETS / "run" / name, run.path / name)
    shutil.copy2(ASSETS / "model.pt", run.checkpoint(BEST))
    if report == "recompute" or (report and not (ASSETS / "report").is_dir()):
        tick("eval report (real vs generated, with the training cohort)")
        report_dir = _compute_report(ws)
        for prefix in dict.fromkeys((str(ws.resolve()), str(ws))):  # eval report keeps paths as given
            _swap_paths(report_dir, prefix, RELATIVE_ROOT)
    elif report:
        tick("eval report (shipped with the demo assets)")
        _install_report(ASSETS / "report", ws / "report")
    tick("review session")
    from eval.review.store import add_reader, create_session

    db = f"sqlite:///{ws / REVIEW_DB}"  # the store keeps the case paths relative to the database's folder
    sid = create_session(
        db,
        "Demo reader study",
        ws / "real",
        ws / "generated",
        n_per_cohort=REVIEW_PER_COHORT,
        seed=0,
        instructions="Demo study: phantom scans vs scans generated by the demo model. Is each scan real or synthetic?",
    )
    add_reader(db, sid, "Demo reader", code=DEMO_READER_CODE)
    tick("real CT scans (fetched once into the real-CT cache; see python -m ctdiff real-ct)")
    from ctdiff.data.realct import install_cohort

    real_ct = install_cohort(ws / REAL_CT, network=os.environ.get(REAL_CT_ENV, "1") != "0")
    if "folder" in real_ct:
        real_ct["folder"] = REAL_CT  # relative to the workspace (ctdiff_app.workspace.real_ct_folder)
    write_json(
        ws / WORKSPACE_JSON,
        {
            "name": "demo",
            "complete": True,
            "paths": "relative to this folder (report/report.json: relative to report/)",
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "synthetic_data": (
                "train/, real/ and generated/ hold ctdiff phantoms or scans generated from them, no patient; "
                "real-ct/ (when present) holds two real, public CT scans (see its manifest.json)"
            ),
            "demo_reader_code": DEMO_READER_CODE,
            "review_session": sid,
            "model": info.get("model", {}),
            "train_cohort": cohort,
            "real_cohort": {"n": REAL_N, "seed": REAL_SEED, "shape": list(shape), "noise_hu": cohort["noise_hu"]},
            "real_ct_cohort": real_ct,  # two scanner CT scans in real-ct/, or {"missing": why}
        },
    )


PLACEHOLDER = "@CTDIFF_DEMO_WORKSPACE@"
# what the workspace root becomes in the workspace's report: its paths are relative to report/
RELATIVE_ROOT = ".."
REVIEW_DB = "reviews.sqlite"
REAL_CT = "real-ct"
REPORT_FILES = ("report.json", "report.md", "report.html")


def _compute_report(ws: Path, cache_dir: str | os.PathLike | None = None) -> Path:
    """Run ``eval report`` on the workspace; features are cached in ``cache_dir`` (default ``ws/.cache``)."""
    from eval.report import build_report

    build_report(
        ws / "real",
        ws / "generated",
        train=ws / "train",
        out=ws / "report",
        cache_dir=cache_dir if cache_dir is not None else ws / ".cache",
        force=True,
    )
    return ws / "report"


def _swap_paths(folder: Path, old: str, new: str) -> None:
    """Replace a workspace path in the report's text files (JSON-escaped inside report.json)."""
    for name in REPORT_FILES:
        f = folder / name
        if not f.is_file():
            continue
        text = f.read_text(encoding="utf-8")
        if name.endswith(".json"):
            text = text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1])
        else:
            text = text.replace(old, new)
        f.write_text(text, encoding="utf-8")


def _install_report(src: Path, dst: Path) -> None:
    """Copy the shipped report into the workspace with its paths relative to the report folder
    (``../real/case_000.nii.gz``), so the workspace can be renamed into place and moved.

    The report was computed by :func:`export_assets` on exactly these inputs (seeded phantom
    cohorts, the shipped samples, a seeded bootstrap); ``--recompute-report`` computes it again.
    The app matches a report's scans by content hash, never by path.
    """
    shutil.copytree(src, dst)
    _swap_paths(dst, PLACEHOLDER, RELATIVE_ROOT)


# ------------------------------------------------------------------------------------ assets
def resample_assets(out: str | os.PathLike = ASSETS, progress: Progress | None = None) -> Path:
    """Draw the shipped samples ``out/samples`` anew from the shipped ``out/model.pt`` with the sampler,
    steps and seed ``out/assets.json`` records (after a change to sampling, such as the air floor of
    the noise re-synthesis); the model and ``assets.json`` stay as they are. Recompute the report
    after it (:func:`export_report`)."""
    out = Path(out)
    r = json.loads((out / "assets.json").read_text())["samples"]
    return _draw_samples(out, int(r["n"]), r["sampler"], int(r["steps"]), int(r["seed"]), progress)


def _draw_samples(out: Path, n: int, sampler: str, steps: int, seed: int, progress: Progress | None) -> Path:
    """``out/samples``: ``n`` samples of ``out/model.pt`` (batches of 4), written as the demo's."""
    from ctdiff.diffusion.sample import load_bundle, sample, write_samples

    bundle = load_bundle(out / "model.pt", device="cpu")
    cb = None if progress is None else (lambda d, t: progress(d, t, "sampling"))
    vols = sample(bundle, n, sampler=sampler, steps=steps, seed=seed, batch_size=4, callback=cb)
    for v in vols:
        v.meta["checkpoint"] = "ctdiff_app/demo/assets/model.pt"
    write_samples(vols, out / "samples", info={"demo": True}, force=True)
    return out / "samples"


def export_report(
    out: str | os.PathLike = ASSETS,
    train_cohort: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """(Re)compute the shipped report ``out/report`` on exactly the demo's inputs: the seeded phantom
    cohorts (``train/``, ``real/``) as today's phantom draws them and the shipped samples.

    Needed whenever the phantom or the metrics change (the report is bound to its scans by content
    hash). ``train_cohort`` defaults to the one recorded in ``out/assets.json``; ``cache_dir`` is
    eval's feature cache (default: the user cache; keys are file contents, never stale).
    """
    import tempfile

    from ctdiff.data.phantom import write_cohort
    from eval.report.cache import default_cache_dir

    out = Path(out)
    if train_cohort is None:
        train_cohort = json.loads((out / "assets.json").read_text())["train_cohort"]
    with tempfile.TemporaryDirectory(prefix="ctdiff-demo-report-") as tmp:
        scratch = Path(tmp) / "ws"
        shape = tuple(train_cohort["shape"])
        write_cohort(
            scratch / "train",
            n=train_cohort["n"],
            shape=shape,
            seed=train_cohort["seed"],
            noise_hu=train_cohort["noise_hu"],
            progress=False,
        )
        write_cohort(
            scratch / "real", n=REAL_N, shape=shape, seed=REAL_SEED, noise_hu=train_cohort["noise_hu"], progress=False
        )
        shutil.copytree(out / "samples", scratch / "generated")
        report_dir = _compute_report(scratch, cache_dir if cache_dir is not None else default_cache_dir())
        _swap_paths(report_dir, str(scratch.resolve()), PLACEHOLDER)
        if (out / "report").exists():
            shutil.rmtree(out / "report")
        shutil.copytree(report_dir, out / "report")
    return out / "report"


def set_sampling(config: dict[str, Any], sampler: str, steps: int, **settings: Any) -> dict[str, Any]:
    """A copy of a checkpoint's config dict whose ``sample`` section is ``sampler`` / ``steps``, and any
    other ``sample`` keys given (``z_margin``, ``keep_slices``)."""
    return {
        **config,
        "sample": {**(config.get("sample") or {}), **settings, "sampler": sampler, "steps": int(steps)},
    }


def _without_machine_paths(record: dict) -> dict:
    """A carried autoencoder record with file names where it names files on this machine: its own file,
    the volumes its noise model was fitted on (fit-noise) and those its decoder was tuned on (tune-decoder)."""
    record = {**record, "path": Path(record["path"]).name}
    noise = record.get("noise_model")
    if noise and noise.get("fitted_on"):
        record["noise_model"] = {**noise, "fitted_on": [Path(f).name for f in noise["fitted_on"]]}
    tuning = record.get("decoder_tuning")
    if tuning and tuning.get("data"):
        record["decoder_tuning"] = {**tuning, "data": [Path(f).name for f in tuning["data"]]}
    return record


def export_assets(
    run_dir: str | os.PathLike,
    train_cohort: dict[str, Any],
    out: str | os.PathLike = ASSETS,
    n_samples: int = REAL_N,
    sampler: str = "ddpm",
    steps: int = 50,
    seed: int = 1000,
    command: str = "",
    force: bool = False,
    progress: Progress | None = None,
    with_report: bool = True,
    cache_dir: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    sample_settings: dict[str, Any] | None = None,
) -> Path:
    """Write the demo assets from a training run: fp16 EMA checkpoint, run files, samples, report.

    ``sample_settings``: other ``sample`` keys the shipped model's config gets (``z_margin``,
    ``keep_slices``), checked as a config file's are; the samples are drawn with them.

    ``checkpoint``: the checkpoint file to ship (default the run's ``checkpoints/best.pt``), e.g. one
    that ``python -m ctdiff fit-noise`` gave a noise model; the run files still come from ``run_dir``.

    ``train_cohort``: ``{"n", "seed", "shape", "noise_hu"}`` of the phantom cohort the run trained on.
    ``cache_dir``: eval's feature cache (default: the user cache, so the seeded phantom cohorts'
    features are computed once across exports; keys are file contents, so a new model never hits
    stale entries).
    """
    import torch

    from ctdiff.atomic import atomic_path, prepare_output_dir
    from ctdiff.model.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
    from ctdiff.outputs import check_output

    out = Path(out)
    config_from_dict({"sample": dict(sample_settings or {})})  # a bad setting: ConfigError before any file
    # --force replaces only demo assets (assets.json), never the run it exports from or other files
    inputs = {"--run": run_dir, **({"--checkpoint": checkpoint} if checkpoint is not None else {})}
    check_output(out, command="demo-assets", force=force, inputs=inputs)
    prepare_output_dir(out, force=True)
    src = resolve_checkpoint(checkpoint if checkpoint is not None else run_dir)
    ckpt = load_checkpoint(src)
    slim = {
        "config": ckpt["config"],
        "ema": {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in ckpt["ema"].items()},
        "geometry": ckpt["geometry"],
        "step": ckpt["step"],
        "epoch": ckpt.get("epoch"),
        "exported_from": src.name,
        **({"space": ckpt["space"]} if ckpt.get("space") is not None else {}),  # wavelet/latent models
        # a Gaussian start (fit-start), which the config's sample.gaussian_start then samples from
        **({"gaussian_start": ckpt["gaussian_start"]} if ckpt.get("gaussian_start") is not None else {}),
        # a spread correction (fit-spread), which the config's sample.spread_correction then applies
        **({"spread_correction": ckpt["spread_correction"]} if ckpt.get("spread_correction") is not None else {}),
        # the training scans' body histogram (fit-histogram), which sample.histogram_match then matches
        **({"histogram_reference": ckpt["histogram_reference"]} if ckpt.get("histogram_reference") is not None else {}),
    }
    # a sampling-only checkpoint: EMA weights in fp16, no optimizer or training state
    slim["model"] = slim["ema"]
    if (slim.get("space") or {}).get("autoencoder"):
        # latent: the carried autoencoder (fp32: it decodes every sample) is named by its file name and
        # sha256, not by this machine's path; the config names it the same way
        record = _without_machine_paths(slim["space"]["autoencoder"])
        slim["space"] = {**slim["space"], "autoencoder": record}
        slim["config"] = {**slim["config"], "model": {**slim["config"]["model"], "autoencoder": record["path"]}}
    # the sampler the demo samples use becomes the model's default (`ctdiff sample`, the app's Generate)
    slim["config"] = set_sampling(slim["config"], sampler, steps, **(sample_settings or {}))
    save_checkpoint(out / "model.pt", slim)
    source, shipped = RunDir(run_dir), RunDir(out / "run")
    shipped.path.mkdir()
    for name in (RunDir.HISTORY, RunDir.LOSS_PLOT):
        if (source.path / name).exists():
            shutil.copy2(source.path / name, shipped.path / name)
    write_text(shipped.config, config_from_dict(saved_config_values(slim["config"])).to_yaml())  # as train writes it
    split = source.read_split()
    # ship file names, not this machine's paths
    shipped.write_split(split["seed"], [Path(f).name for f in split["train"]], [Path(f).name for f in split["val"]])
    _draw_samples(out, n_samples, sampler, steps, seed, progress)
    if with_report:
        export_report(out, train_cohort, cache_dir=cache_dir)
    from ctdiff.model.autoencoder import sha256_file

    info = {
        "model": {
            "checkpoint": "model.pt",
            "weights": "EMA, fp16",
            "trained_steps": int(ckpt["step"]),
            "trained_epochs": ckpt.get("epoch"),
            "source_checkpoint": src.name,
            # what a workspace built from these assets records: a refitted noise model changes only this
            "sha256": sha256_file(out / "model.pt"),
            "command": command,
        },
        "train_cohort": train_cohort,
        "samples": {"n": n_samples, "sampler": sampler, "steps": steps, "seed": seed, **(sample_settings or {})},
    }
    with atomic_path(out / "assets.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return out


# ------------------------------------------------------------------------------------------ CLI
EXAMPLES = """\
  python -m ctdiff_app demo                      # build workspace/demo (reused if already built)
  python -m ctdiff_app demo --out /tmp/demo-ws   # somewhere else
  python -m ctdiff_app demo --force              # rebuild from scratch
  python -m ctdiff_app demo --force --recompute-report   # and compute the eval report here (minutes)
"""


def add_arguments(parser) -> None:
    parser.add_argument("--out", default=str(DEFAULT_WORKSPACE), help="workspace folder (default workspace/demo)")
    parser.add_argument("--force", action="store_true", help="rebuild an existing workspace")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--no-report", action="store_true", help="skip the eval report")
    group.add_argument(
        "--recompute-report",
        action="store_true",
        help="run eval report on the workspace instead of installing the shipped one (minutes)",
    )


def run(args) -> int:
    from tqdm import tqdm

    action, why = demo_state(args.out)
    if action == "reuse" and not args.force:
        print(
            f"demo workspace already built, reused: {args.out}  (reader code: {DEMO_READER_CODE}; rebuild with --force)"
        )
        reason = stale_reason(args.out)
        if reason:
            print(f"note: {args.out} was {reason}")
        return 0
    if action == "rebuild":
        print(f"demo: {why}")
    bar = tqdm(total=6 if not args.no_report else 5, unit="stage", desc="demo workspace")

    def progress(done, total, message=""):
        bar.n = done
        bar.set_postfix_str(message)
        bar.refresh()

    report = "recompute" if args.recompute_report else not args.no_report
    try:
        ws = ensure_demo_workspace(args.out, progress=progress, force=args.force, report=report)
    finally:
        bar.close()
    print(f"demo workspace ready: {ws}  (reader code: {DEMO_READER_CODE})")
    return 0
