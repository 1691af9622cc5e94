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


def _launch_error(*args: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of a launch.py that should stop at once."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "launch.py", *args], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, out.stderr.splitlines()


@pytest.mark.parametrize("args, named", [
    (["--role", "learner", "--learner", "notanaddress"], "--learner"),
    (["--role", "collector", "--learner", "tcp://hub-without-port"], "--learner"),
    (["--role", "prior", "--prior", "tcp://0.0.0.0:port"], "--prior"),
])
def test_a_bad_address_is_one_error_line_naming_the_flag(args, named, tmp_path):
    """Issue 21: --learner notanaddress ended in a 33-line traceback (exit 1)."""
    code, lines = _launch_error(*args, "--max-seconds", "5", f"run.out_dir={tmp_path}")
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert code == 2 and len(errors) == 1 and named in errors[0], lines
    assert not any("Traceback" in ln for ln in lines), lines


def test_a_port_in_use_is_one_error_line(tmp_path):
    """Issue 21: a hub on a port another process holds ended in a 48-line traceback (exit 1)."""
    import socket

    from pzstream.stream.transport import free_base_port

    port = free_base_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", port + 2))  # the hub's log intake port, P+2: every one of the four counts
    holder.listen()
    try:
        code, lines = _launch_error("--role", "learner", "--learner", f"tcp://127.0.0.1:{port}", "--max-seconds", "5",
                                    "trainer.enabled=false", "ppo.enabled=false", f"run.out_dir={tmp_path}")
    finally:
        holder.close()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert code == 2 and len(errors) == 1, lines
    assert "Address already in use" in errors[0] and f"127.0.0.1:{port + 2}" in errors[0], errors
    assert not any("Traceback" in ln for ln in lines), lines
