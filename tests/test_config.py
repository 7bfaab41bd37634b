"""Configs: TOML round trip, dotted overrides, clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from orient3d.config import Config, apply_overrides, dumps, load_config
from orient3d.errors import ConfigError


def test_defaults_and_round_trip(tmp_path: Path) -> None:
    cfg = apply_overrides(Config(), ["--train.epochs=3", "model.latent=16", 'data.classes=["a"]'])
    assert cfg.train.epochs == 3 and cfg.model.latent == 16 and cfg.data.classes == ("a",)
    p = tmp_path / "c.toml"
    p.write_text(dumps(cfg))
    assert load_config(p) == cfg


def test_partial_file_takes_defaults(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("seed = 3\n[train]\nmode = 'augmented'\nlr = 1\n")
    cfg = load_config(p, ["train.batch_size=8"])
    assert cfg.seed == 3 and cfg.train.mode == "augmented" and cfg.train.lr == 1.0
    assert cfg.train.batch_size == 8 and cfg.model == Config().model


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.epoch=3", "unknown config key train.epoch; valid keys: .*train.epochs"),
        ("train.epochs=x", "train.epochs: expected int"),
        ("train.epochs=1.5", "train.epochs: expected int"),
        ("train.mode=foo", "train.mode: 'foo' is not one of"),
        ("model.beta=-1", "model.beta: -1.0 is invalid"),
        ("model.subpixel=1", "model.subpixel: expected bool"),
        ("data=3", "unknown config key data"),
        ("nothing", "not of the form key=value"),
        ("data.res=24", "data.res: 24 is invalid"),
    ],
)
def test_bad_overrides_name_the_key(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Config(), [override])


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[train]\nepochz = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: unknown config key train.epochz"):
        load_config(p)
    p.write_text("[train\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="missing.toml: config file not found"):
        load_config(tmp_path / "missing.toml")


def test_schema_names_import_from_config_and_convert_both_ways() -> None:
    from orient3d import config, config_schema

    for name in ("from_dict", "to_dict", "flatten"):
        assert getattr(config, name) is getattr(config_schema, name)
    cfg = apply_overrides(Config(), ["model.latent=7", "data.classes=['chair']"])
    data = config.to_dict(cfg)
    assert data["model"]["latent"] == 7 and data["data"]["classes"] == ["chair"]  # tuple: list
    assert config.from_dict(Config, data) == cfg
    assert config.flatten(data)["model.latent"] == 7
    assert "continuous.top_k" in config_schema.valid_keys(Config)
