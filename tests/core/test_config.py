"""Config validation, files and overrides: clear errors naming the flag, nothing evaluated."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixprune.core.config import (
    MixupConfig,
    ModelConfig,
    PruneConfig,
    StudyConfig,
    TrainConfig,
    from_dict,
    load_config_file,
    to_dict,
    toml_text,
    with_overrides,
)
from mixprune.core.errors import ConfigError
from mixprune.models import check_config


def test_defaults_are_the_paper_preset():
    c = StudyConfig()
    assert (c.train.epochs, c.train.batch_size, c.train.lr, c.train.momentum, c.train.weight_decay) == (10, 128, 0.01, 0.9, 5e-4)
    assert (c.train.lr_decay_epoch, c.train.lr_decay_factor, c.mixup.alpha) == (8, 0.1, 1.0)
    assert (c.prune.conv_amount, c.prune.fc_amount, c.prune.scope) == (0.2, 0.3, "layerwise")
    assert c.model.dropout == 0.0


@pytest.mark.parametrize("make, flag", [
    (lambda: TrainConfig(epochs=-1), "--epochs"),
    (lambda: TrainConfig(batch_size=0), "--batch-size"),
    (lambda: TrainConfig(lr=0.0), "--lr"),
    (lambda: MixupConfig(alpha=-2.0), "--alpha"),
    (lambda: check_config(ModelConfig(arch="resnet18")), "--arch"),  # the model registry checks names
    (lambda: PruneConfig(conv_amount=1.0), "--conv-amount"),
    (lambda: PruneConfig(fc_amount=-0.1), "--fc-amount"),
    (lambda: PruneConfig(scope="channel"), "--prune-scope"),
    (lambda: StudyConfig(seeds=(1, 1)), "--seeds"),
    (lambda: StudyConfig(device="tpu"), "--device"),
])
def test_out_of_range_names_the_flag(make, flag):
    with pytest.raises(ConfigError, match=flag):
        make()


@pytest.mark.parametrize("value", ["10", 2.5, True, None])
def test_wrong_type_rejected(value):
    with pytest.raises(ConfigError, match=r"--epochs \(train.epochs\): expected an integer"):
        TrainConfig(epochs=value)


def test_nan_rejected():
    with pytest.raises(ConfigError, match="finite number"):
        TrainConfig(lr=float("nan"))


def test_int_accepted_for_float_field():
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)


def test_toml_round_trip(tmp_path):
    cfg = with_overrides(StudyConfig(), {"seeds": [3, 4], "train.epochs": 2, "mixup.alpha": 0.2,
                                         "data.data_dir": "/x y", "prune.scope": "global"})
    path = tmp_path / "c.toml"
    path.write_text(toml_text(cfg))
    assert load_config_file(path) == cfg


def test_unknown_fields_and_sections(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting train.epoch;"):
        from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown setting 'optimizer'"):
        from_dict({"optimizer": {}})
    with pytest.raises(ConfigError, match=r"\[train\] must be a table"):
        from_dict({"train": 3})


def test_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "absent.toml")


def test_config_text_is_never_evaluated(tmp_path):
    path = tmp_path / "evil.toml"
    path.write_text('[train]\nepochs = "__import__(\'os\').system(\'touch pwned\')"\n')
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config_file(path)
    assert not (tmp_path / "pwned").exists()


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["epochs", "batch_size", "lr", "momentum", "weight_decay", "bogus"]),
                       st.one_of(st.integers(-5, 300), st.floats(allow_nan=True), st.text(max_size=3),
                                 st.booleans(), st.none()), max_size=4))
def test_any_train_table_gives_config_or_config_error(table):
    try:
        cfg = from_dict({"train": table})
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert cfg.train.epochs >= 0 and cfg.train.batch_size >= 1 and cfg.train.lr > 0
        assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)


@pytest.mark.parametrize("override, message", [
    ({"bench.min_run_time": 1e30}, "--bench-seconds"),
    ({"train.epochs": 10**5000}, "an integer from"),
    ({"seeds": [2**40]}, "an integer from"),
    ({"prune.method": "structured", "prune.ratios": "conv1=0.5,conv1=0.9"}, "conv1 is given twice"),
    ({"ray_address": "127.0.0.1:6379"}, "--address 127.0.0.1:6379 (ray_address) is for --backend ray"),
])
def test_flags_out_of_reach_are_refused(override, message):
    """--bench-seconds 1e30 used to hang, a 5,000-digit integer was a traceback, a repeated --prune-ratios group took
    the last value, and --address without --backend ray was ignored."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        with_overrides(StudyConfig(), override)


def test_a_config_file_is_checked_with_the_flags_once_merged(tmp_path):
    """A file may hold a setting only a flag makes valid (it used to be checked alone first), and may be saved with
    a byte-order mark and CRLF line endings; a 5,000-digit integer in it is one line."""
    from mixprune.core.config import layered, read_toml

    path = tmp_path / "c.toml"
    text = ('[prune]\r\nkeep = "conv1"\r\n[distill]\r\nteacher = "t.safetensors"\r\n[train]\r\nwarmup_epochs = 12\r\n')
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    cfg = layered([("config file", read_toml(path, "config file"))],
                  {"prune.method": "structured", "distill.enabled": True, "train.epochs": 20})
    assert (cfg.prune.keep, cfg.distill.teacher, cfg.train.warmup_epochs) == ("conv1", "t.safetensors", 12)
    with pytest.raises(ConfigError, match="more than --epochs|apply to --prune-method structured"):
        load_config_file(path)  # without the flags it is invalid, and says so
    path.write_text("[train]\nepochs = " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match="holds a value mixprune cannot take"):
        load_config_file(path)
