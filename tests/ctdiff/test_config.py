"""Config: presets load, overrides are typed, unknown keys and bad values give ConfigError naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctdiff.config import Config, config_from_dict, diff_sections, load_config
from ctdiff.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_thesis_preset_matches_thesis_facts():
    c = load_config(CONFIGS / "thesis-256.yaml")
    assert c.model.channels == (32, 64, 64, 128, 256, 512, 512)
    assert c.model.block_kinds == ("3d", "2d", "3d", "2d", "3d", "3d", "3d")
    assert c.model.attention == (False, False, False, False, False, True, False)
    assert c.model.mid_attention is True and c.model.res_blocks == 2 and c.model.norm_groups == 32
    assert (c.diffusion.timesteps, c.diffusion.beta_schedule, c.diffusion.prediction) == (1000, "linear", "epsilon")
    assert (c.diffusion.beta_start, c.diffusion.beta_end) == (1e-4, 0.02)  # "1.0e-4" parsed as a float
    assert (c.train.lr, c.train.warmup_steps, c.train.batch_size, c.train.epochs) == (1e-4, 1000, 1, 2000)
    assert c.data.shape == (256, 256, 26) and c.data.pad_slices_to == 32


def test_every_preset_loads():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert {"demo.yaml", "thesis-256.yaml"} <= set(names)
    for p in CONFIGS.glob("*.yaml"):
        assert isinstance(load_config(p), Config)


def test_override_is_typed_and_applied():
    c = load_config(CONFIGS / "demo.yaml", ["train.lr=2e-4", "model.channels=[8, 16, 16, 32]", "data.pad_slices_to=32"])
    assert c.train.lr == 2e-4 and isinstance(c.train.lr, float)
    assert c.model.channels == (8, 16, 16, 32)
    assert c.data.pad_slices_to == 32


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.lrr=1e-3", ["train.lrr"]),
        ("trian.lr=1e-3", ["trian"]),
        ("train.epochs=ten", ["train.epochs", "integer"]),
        ("train.amp=yes please", ["train.amp", "true or false"]),
        ("model.channels=[8, 16]", ["model.block_kinds", "2 levels"]),
        ("model.channels=[12, 16, 64, 64]", ["12", "norm_groups"]),
        ("sample.sampler=euler", ["sample.sampler", "euler"]),
        ("data.hu_window=[100, -100]", ["data.hu_window"]),
        ("train", ["section.key=value"]),
    ],
)
def test_bad_override_names_the_key(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "demo.yaml", [override])
    for w in words:
        assert w in str(info.value)


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  chanels: [8, 16]\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert "model.chanels" in msg and str(p) in msg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(p)


def test_yaml_round_trip_and_diff(tmp_path):
    c = load_config(CONFIGS / "demo.yaml", ["train.seed=7"])
    p = tmp_path / "saved.yaml"
    p.write_text(c.to_yaml())
    back = load_config(p)
    assert back == c
    other = config_from_dict({**c.to_dict(), "model": {**c.to_dict()["model"], "res_blocks": 3}})
    assert diff_sections(c, other) == ["model.res_blocks: 1 -> 3"]
    assert diff_sections(c, back) == []
