from pathlib import Path

import pytest

from pzstream.config import ConfigError, load_config, parse_override


def test_defaults_load_from_debug_yaml():
    cfg = load_config()
    assert cfg.hub.address.startswith("tcp://127.0.0.1:")
    assert cfg.collector.game == "default"


def test_overrides_are_typed():
    cfg = load_config(None, ["hub.credit_window=64", "run.log_level=debug", "collector.max_steps=10"])
    assert cfg.hub.credit_window == 64 and cfg.run.log_level == "DEBUG" and cfg.collector.max_steps == 10


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"hub\.credit_windw"):
        load_config(None, ["hub.credit_windw=3"])


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"hub\.credit_window"):
        load_config(None, ["hub.credit_window=-1"])
    with pytest.raises(ConfigError, match=r"collector\.segment_steps"):
        load_config(None, ["collector.segment_steps=lots"])


def test_cross_field_check_names_both_keys():
    with pytest.raises(ConfigError, match=r"segment_steps.*wire\.max_steps"):
        load_config(None, ["collector.segment_steps=100", "wire.max_steps=10"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("hub: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("justakey")


def test_named_config_resolves_from_config_dir():
    cfg = load_config("multihost")
    assert cfg.security.curve_dir == "keys"


def test_impossible_model_and_search_sizes_fail_at_start_naming_the_key():
    with pytest.raises(ConfigError, match=r"model.*latent_dim \(30\) must be divisible by n_heads"):
        load_config(None, ["model.latent_dim=30"])
    with pytest.raises(ConfigError, match=r"model.*unknown world-model key 'latent_dimm'"):
        load_config(None, ["model.latent_dimm=64"])
    with pytest.raises(ConfigError, match=r"search\.num_simulations"):
        load_config(None, ["search.num_simulations=0"])
    with pytest.raises(ConfigError, match=r"trainer\.publish_every"):
        load_config(None, ["trainer.publish_every=0"])


def test_devices_are_checked_against_the_gpus_present():
    from pzstream.config import check_devices, devices

    cfg = load_config(None, ["trainer.device=cuda:1", "search_server.device=cuda", "ppo.device=cuda:0"])
    check_devices(cfg, 2)  # both exist
    with pytest.raises(ConfigError, match=r"trainer.device=cuda:1: this host has 1 GPU\(s\): cuda:0"):
        check_devices(cfg, 1)
    with pytest.raises(ConfigError, match="search_server.device=cuda.*no GPU"):
        check_devices(cfg, 0)
    check_devices(load_config(None, []), 0)  # the embedded default is all CPU
    assert devices(load_config(None, ["trainer.device=cuda:1"]))["trainer"] == "cuda:1"
    with pytest.raises(ConfigError, match="trainer.device"):
        load_config(None, ["trainer.device=gpu"])


def test_launch_refuses_a_device_the_host_lacks():
    import subprocess
    import sys

    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("a host with 8 GPUs has cuda:7")
    out = subprocess.run([sys.executable, "launch.py", "--role", "learner", "trainer.device=cuda:7"],
                         cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "trainer.device=cuda:7: this host has" in out.stderr
