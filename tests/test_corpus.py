"""Every entry of the bad-input corpus (tests/corpus/bad_inputs.py) gives a one-line error: never a
traceback, a silently wrong result, a deleted input or a partial output."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from ctdiff.data.io import find_cases, read_volume
from ctdiff.errors import InputError
from tests.corpus.bad_inputs import CLI_CORPUS, READER_CORPUS

REPO = Path(__file__).resolve().parents[1]

TINY_CONFIG = {
    "name": "tiny-corpus",
    "data": {"pad_slices_to": 8, "hu_window": [-1000.0, 1000.0]},
    "model": {
        "space": "pixel",  # the library default is latent; these tests are about the voxel path
        "channels": [4, 8],
        "block_kinds": ["3d", "3d"],
        "attention": [False, False],
        "norm_groups": 4,
        "head_channels": 4,
        "res_blocks": 1,
    },
    "diffusion": {
        "kind": "ddpm",
        "timesteps": 100,
        "beta_schedule": "linear",
        "beta_end": 0.2,
        "prediction": "epsilon",
    },
}


@pytest.mark.parametrize("name", sorted(READER_CORPUS))
def test_reader_corpus_entry_is_a_one_line_input_error(name, tmp_path):
    build, words = READER_CORPUS[name]
    path = build(tmp_path)
    with pytest.raises(InputError) as info:
        if path.is_dir():
            find_cases(path)
        else:
            read_volume(path)
    message = str(info.value)
    assert words in message
    assert "\n" not in message
    assert str(path) in message  # the file is named


def _checkpoint(path: Path, *, nan: bool = False, drop: tuple[str, ...] = ()) -> Path:
    from ctdiff.config import config_from_dict
    from ctdiff.model.checkpoint import save_checkpoint
    from ctdiff.model.unet import build_model

    cfg = config_from_dict(TINY_CONFIG)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if nan:
        first = next(k for k, v in state.items() if v.is_floating_point())
        state[first].view(-1)[0] = float("nan")
    ckpt = {
        "config": cfg.to_dict(),
        "model": state,
        "ema": state,
        "step": 1,
        "geometry": {
            "shape": [16, 16, 6],
            "depth": 8,
            "affine": np.diag([2.0, 2.0, 3.0, 1.0]).tolist(),
            "spacing": [2.0, 2.0, 3.0],
        },
    }
    for key in drop:
        ckpt.pop(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, ckpt)


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    from ctdiff.data.phantom import write_cohort

    tmp = tmp_path_factory.mktemp("corpus")
    write_cohort(tmp / "real", n=3, shape=(16, 16, 6), seed=0, progress=False)
    write_cohort(tmp / "gen", n=3, shape=(16, 16, 6), seed=1, progress=False)
    write_cohort(tmp / "other" / "phantom", n=1, shape=(8, 8, 4), seed=2, progress=False)
    run = tmp / "run"
    _checkpoint(run / "checkpoints" / "best.pt")
    (run / "config.yaml").write_text("name: tiny-corpus\n")
    (tmp / "empty.pt").write_bytes(b"")
    _checkpoint(tmp / "incomplete.pt", drop=("ema", "geometry"))
    _checkpoint(tmp / "nan.pt", nan=True)
    (tmp / "weights.txt").write_text("these are not weights\n")
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "notes.txt").write_text("someone else's files\n")
    # a run dir as train leaves it when stopped before its first checkpoint
    (tmp / "early").mkdir()
    (tmp / "early" / "config.yaml").write_text("name: tiny-corpus\n")
    (tmp / "early" / "split.json").write_text('{"seed": 0, "train": [], "val": []}\n')
    return {
        "early_run": str(tmp / "early"),
        "tmp": str(tmp),
        "real": str(tmp / "real"),
        "gen": str(tmp / "gen"),
        "run": str(run),
        "empty_ckpt": str(tmp / "empty.pt"),
        "incomplete_ckpt": str(tmp / "incomplete.pt"),
        "nan_ckpt": str(tmp / "nan.pt"),
        "text_file": str(tmp / "weights.txt"),
        "foreign": str(tmp / "foreign"),
        "phantom_out": str(tmp / "other" / "phantom"),
    }


def _fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("name", sorted(CLI_CORPUS))
def test_cli_corpus_entry_is_a_one_line_error(name, places, tmp_path, capsys, monkeypatch):
    from ctdiff.cli import main as ctdiff_main
    from eval.cli import main as eval_main

    monkeypatch.chdir(REPO)  # configs/demo.yaml is given relative to the repository
    monkeypatch.setenv("CTDIFF_CACHE_DIR", str(tmp_path / "cache"))
    template, code, words = CLI_CORPUS[name]
    values = {**places, "new": str(tmp_path / "new")}
    argv = [a.format(**values) for a in template]
    before = _fingerprint(Path(places["tmp"]))
    main = {"ctdiff": ctdiff_main, "eval": eval_main}[argv[1]]
    rc = main(argv[2:])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == code, err
    assert len(lines) == 1 and words in lines[0], err
    assert "Traceback" not in err
    assert _fingerprint(Path(places["tmp"])) == before  # no input deleted or changed, nothing written next to them
    assert not (tmp_path / "new").exists()  # no partial output


def test_non_finite_sampler_output_is_an_error_not_a_volume(tmp_path, monkeypatch):
    import ctdiff.diffusion.sample as sample_mod

    bundle = sample_mod.load_bundle(_checkpoint(tmp_path / "ok.pt"), device="cpu")
    monkeypatch.setattr(
        sample_mod,
        "run_sampler",
        lambda sampler, model, shape, diffusion, steps, seeds, device, cb, **start: torch.full(
            (len(seeds), *shape), float("nan")
        ),
    )
    with pytest.raises(InputError, match="non-finite values"):
        sample_mod.sample(bundle, 2, steps=3)


class _Payload:
    """A pickled object that, when unpickled by a plain ``pickle``/``torch.load``, creates a file."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_a_checkpoint_with_pickled_code_never_runs_it(tmp_path, capsys):
    """What held in issue 17 (7 attempts) stays held: checkpoints load with weights_only=True."""
    from ctdiff.cli import main as ctdiff_main
    from ctdiff.model.checkpoint import load_checkpoint

    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": _Payload(str(target))}, evil)
    # the file is a real attack: an unrestricted load runs the payload
    torch.load(evil, weights_only=False)
    assert target.exists()
    target.unlink()
    with pytest.raises(InputError) as info:
        load_checkpoint(evil)
    assert "\n" not in str(info.value) and str(evil) in str(info.value)
    assert ctdiff_main(["sample", "--checkpoint", str(evil), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not target.exists() and not (tmp_path / "out").exists()
