"""LLM core: tiny model, prompts, prior scoring (shared vs naive), backend weights."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pzstream.llm.backend import LLMBackend, TransformersBackend
from pzstream.llm.prior import (candidate_logprobs_naive, candidate_logprobs_shared,
                                candidate_logprobs_split, candidate_logprobs_tree, prior_from_logprobs,
                                tree_scorer)
from pzstream.llm.prompts import PromptConfig, build_prompt, fit_prompt
from pzstream.llm.tiny import build_tiny, resolve_model

WORDS = ("go north take lamp open the small mailbox examine leaflet brass lantern west up "
         "down kill troll with elvish sword climb tree read book").split()


@pytest.fixture(scope="module")
def backend():
    # Tiny matrices: one thread is fastest and does not stall when the other core is busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TransformersBackend("tiny")
    torch.set_num_threads(threads)


def _candidates(rng: np.random.Generator, k: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, int(rng.integers(1, 8)))) for _ in range(k)]


def _prompts(b: int) -> list[str]:
    base = ["You are in a dark room. It is pitch black.",
            "West of House\nYou are standing in an open field west of a white house. " * 4,
            "x"]
    return [build_prompt(PromptConfig(), [("obs", "look", 0)] * (i % 3), base[i % 3]) for i in range(b)]


@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_shared_equals_naive(backend, b, k):
    rng = np.random.default_rng(100 * b + k)
    prompts = _prompts(b)
    cands = [_candidates(rng, k) for _ in range(b)]
    m, t = backend.model, backend.tokenizer
    shared = candidate_logprobs_shared(m, t, prompts, cands)
    naive = candidate_logprobs_naive(m, t, prompts, cands)
    assert [len(x) for x in shared] == [k] * b
    diff = max(float(np.abs(x - y).max()) for x, y in zip(shared, naive))
    assert diff < 1e-3
    # candidates of one root really differ (the test is not vacuous)
    if k > 1:
        assert float(np.ptp(shared[0])) > 0.05
    # chunking (tiny row / root limits) gives the same numbers
    chunked = candidate_logprobs_shared(m, t, prompts, cands, max_rows=3, max_roots=1)
    assert max(float(np.abs(x - y).max()) for x, y in zip(chunked, naive)) < 1e-3



def _maxdiff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


#: the two packed-tree methods (one forward; prompts then candidates): the same numbers
TREES = pytest.mark.parametrize("tree_fn", [candidate_logprobs_tree, candidate_logprobs_split], ids=["tree", "split"])


@TREES
@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("same_prompt_len", [False, True])
def test_tree_equals_naive(backend, tree_fn, b, k, same_prompt_len):
    """Packed-tree scoring == naive full sequences; with prompts of one length (no padding
    across roots) and of different lengths (padded rows), candidates of different lengths."""
    rng = np.random.default_rng(1000 + 100 * b + k + 7 * same_prompt_len)
    prompts = [_prompts(1)[0]] * b if same_prompt_len else _prompts(b)
    cands = [_candidates(rng, k) for _ in range(b)]
    m, t = backend.model, backend.tokenizer
    tree = tree_fn(m, t, prompts, cands)
    naive = candidate_logprobs_naive(m, t, prompts, cands)
    assert [x.shape for x in tree] == [(k,)] * b and all(x.dtype == np.float64 for x in tree)
    assert _maxdiff(tree, naive) < 1e-3
    if k > 1:
        lens = {len(t(" " + c, add_special_tokens=False)["input_ids"]) for c in cands[0]}
        assert len(lens) > 1  # candidates of different token lengths in one packed row
        assert float(np.ptp(tree[0])) > 0.05
    # chunking into several forwards (one root per forward, few candidates) changes nothing
    chunked = tree_fn(m, t, prompts, cands, max_rows=3, max_roots=1)
    assert _maxdiff(chunked, naive) < 1e-3


@TREES
@pytest.mark.parametrize("limit", [1, 40, 60])
def test_tree_group_split(backend, tree_fn, limit):
    """Prompt + all candidates longer than the packed limit: the root's candidates are split
    over several packed rows (limit 1: one candidate per row)."""
    rng = np.random.default_rng(7)
    prompts = ["You are in a dark room. Action:", "x", "West of House. " * 3 + "Action:"]
    cands = [_candidates(rng, 20) for _ in prompts]
    m, t = backend.model, backend.tokenizer
    naive = candidate_logprobs_naive(m, t, prompts, cands)
    assert _maxdiff(tree_fn(m, t, prompts, cands, max_packed_tokens=limit), naive) < 1e-3


@TREES
def test_tree_split_at_model_context(backend, tree_fn):
    """The default packed limit is the model's max_position_embeddings."""
    m, t = backend.model, backend.tokenizer
    rng = np.random.default_rng(8)
    prompts = _prompts(2)
    cands = [_candidates(rng, 20) for _ in prompts]
    old = m.config.max_position_embeddings
    try:
        plen = max(len(t(p, add_special_tokens=False)["input_ids"]) for p in prompts)
        m.config.max_position_embeddings = plen + 30  # far less than prompt + 20 candidates
        naive = candidate_logprobs_naive(m, t, prompts, cands)
        tree = tree_fn(m, t, prompts, cands)
    finally:
        m.config.max_position_embeddings = old
    assert _maxdiff(tree, naive) < 1e-3


@TREES
def test_tree_truncation_and_odd_inputs(backend, tree_fn):
    m, t = backend.model, backend.tokenizer
    long = " ".join(["take the lamp"] * 200)
    prompts, cands = ["Action:", "", "\x00"], [[long, "go"], [""], ["go", "", "take lamp"]]
    tree = tree_fn(m, t, prompts, cands, max_candidate_tokens=8)
    naive = candidate_logprobs_naive(m, t, prompts, cands, max_candidate_tokens=8)
    assert _maxdiff(tree, naive) < 1e-3 and all(np.all(np.isfinite(x)) for x in tree)


def test_backend_uses_the_tree_method_of_its_device(backend, monkeypatch):
    import pzstream.llm.prior as prior_mod

    assert tree_scorer("cpu") is candidate_logprobs_split and tree_scorer("cuda:0") is candidate_logprobs_tree
    calls = []
    orig = prior_mod.candidate_logprobs_split
    monkeypatch.setattr(prior_mod, "candidate_logprobs_split", lambda *a, **kw: calls.append(1) or orig(*a, **kw))
    prompts, cands = _prompts(2), [["go north", "take lamp"], ["open mailbox"]]
    out = backend.mean_logprobs(prompts, cands)
    assert calls == [1]
    assert _maxdiff(out, candidate_logprobs_shared(backend.model, backend.tokenizer, prompts, cands)) < 1e-3


def test_prior_sums_to_one(backend):
    out = backend.score(_prompts(2), [["go north", "take lamp", "open mailbox"], ["look"]])
    for lp in out:
        assert np.isclose(np.exp(lp).sum(), 1.0, atol=1e-9)
    assert np.allclose(out[1], 0.0)
    p = prior_from_logprobs(np.array([-1.0, -2.0, -np.inf]), temperature=2.0)
    assert np.isclose(np.exp(p).sum(), 1.0) and p[2] == -np.inf
    assert np.allclose(prior_from_logprobs(np.array([np.nan, -np.inf])), -np.log(2))
    with pytest.raises(ValueError):
        prior_from_logprobs(np.array([1.0]), temperature=0.0)


def test_empty_candidates_error(backend):
    with pytest.raises(ValueError, match="empty candidate list"):
        backend.score(["Action:"], [[]])
    with pytest.raises(ValueError, match="one list per prompt"):
        backend.score(["a", "b"], [["go"]])


def test_long_candidate_truncated(backend):
    m, t = backend.model, backend.tokenizer
    long = " ".join(["take the lamp"] * 200)
    a = candidate_logprobs_shared(m, t, ["Action:"], [[long, "go"]], max_candidate_tokens=8)
    b = candidate_logprobs_naive(m, t, ["Action:"], [[long, "go"]], max_candidate_tokens=8)
    assert np.abs(a[0] - b[0]).max() < 1e-3 and np.all(np.isfinite(a[0]))


def test_missing_model_path():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model("/nonexistent/model/dir")
    with pytest.raises(FileNotFoundError):
        TransformersBackend("./no-such-model")
    assert resolve_model("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"


def test_build_tiny_deterministic_and_reused(backend, tmp_path):
    default = Path(resolve_model("tiny"))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(build_tiny(tmp_path / "tiny")))
               for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    built = tmp_path / "tiny"
    assert results == [built, built]
    assert (built / "tokenizer.json").read_bytes() == (default / "tokenizer.json").read_bytes()
    from safetensors.torch import load_file
    a, b = load_file(built / "model.safetensors"), load_file(default / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    mtime = (built / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert build_tiny(built) == built
    assert time.perf_counter() - t0 < 0.5
    assert (built / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_prompt_truncation(backend):
    tok = backend.tokenizer
    cfg = PromptConfig(max_prompt_tokens=200, history_len=3)
    hist = [(f"old observation {i} " + "dusty " * 20, f"action{i}", i) for i in range(5)]
    obs = "START " + "You are in a long corridor. " * 10 + "THE END"
    full = build_prompt(cfg, hist, obs)
    assert "action1" not in full and "action2" in full  # only the last 3 steps
    one_step = build_prompt(cfg, hist[-1:], obs)
    limit = len(tok(one_step, add_special_tokens=False)["input_ids"])
    cfg = PromptConfig(max_prompt_tokens=limit, history_len=3)
    fitted = fit_prompt(tok, cfg, hist, obs)
    assert fitted == one_step
    assert "action4" in fitted and "action2" not in fitted  # oldest dropped first
    tiny_cfg = PromptConfig(max_prompt_tokens=140)  # the fixed template is ~95 tokens
    cut = fit_prompt(tok, tiny_cfg, hist, obs * 5)
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) <= 140
    assert "action4" not in cut and "THE END" in cut and "START" not in cut
    assert "=== Current Situation ===\n..." in cut
    assert cut.rstrip().endswith("Action:")
    worst = fit_prompt(tok, PromptConfig(max_prompt_tokens=10), hist, obs)
    assert len(tok(worst, add_special_tokens=False)["input_ids"]) <= 12


def test_orz_format(backend):
    cfg = PromptConfig.orz()
    p = build_prompt(cfg, [], "A room.", thought="I see a lamp.")
    assert p.endswith("<think>I see a lamp.</think>\n<answer>")
    assert cfg.continuation("take lamp") == "take lamp</answer>"
    out = candidate_logprobs_shared(backend.model, backend.tokenizer, [p], [["take lamp", "go"]],
                                    continuation=cfg.continuation_template)
    assert out[0].shape == (2,) and np.all(np.isfinite(out[0]))


def test_state_dict_roundtrip_and_mismatch(backend):
    from safetensors.torch import load, save
    assert isinstance(backend, LLMBackend)
    data = backend.state_dict_bytes()
    before = {k: v.clone() for k, v in backend.model.state_dict().items()}
    state = load(data)
    name = "model.layers.0.mlp.up_proj.weight"
    state[name] = state[name] + 0.5
    v0 = backend.version
    backend.load_state_dict_bytes(save(state))
    assert backend.version == v0 + 1
    assert torch.allclose(backend.model.state_dict()[name], before[name] + 0.5)
    # tied embeddings: lm_head follows embed_tokens
    sd = backend.model.state_dict()
    assert torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
    bad = dict(state)
    bad["model.layers.1.self_attn.q_proj.weight"] = torch.zeros(3, 3)
    bad[name] = bad[name] + 1.0
    with pytest.raises(ValueError, match="q_proj"):
        backend.load_state_dict_bytes(save(bad))
    assert torch.allclose(backend.model.state_dict()[name], before[name] + 0.5)  # unchanged
    with pytest.raises(ValueError):
        backend.load_state_dict_bytes(b"not safetensors")
    backend.load_state_dict_bytes(data)
    assert all(torch.equal(backend.model.state_dict()[k], before[k]) for k in before)


def test_odd_text_does_not_crash(backend):
    odd = "\ufffd\x00\x01\x07\x1b[31m caf\u00e9 e\u0301 \U0001F600 \ud7ff \t\r\n"
    cfg = PromptConfig(max_prompt_tokens=64)
    p = fit_prompt(backend.tokenizer, cfg, [(odd, odd, float("nan"))], odd * 20, [odd])
    out = backend.score([p, odd, ""], [[odd, "go north"], [""], ["\x00"]])
    assert all(np.isclose(np.exp(x).sum(), 1.0) for x in out)
    gen = backend.generate([odd, ""], max_new_tokens=4)
    assert len(gen) == 2 and all(isinstance(g, str) for g in gen)


def test_batched_tokenisation_matches_single(backend):
    from pzstream.llm.prior import _prepare
    from pzstream.llm.tokens import encode_pair

    t = backend.tokenizer
    odd = "\ufffd\x00\x01\x07\x1b[31m caf\u00e9 e\u0301 \U0001F600 \t\r\n"
    prompts = ["You are here. Action:", "", odd * 3]
    cands = [["go north", "take the brass lantern", odd], [""], ["x", "open mailbox"]]
    p_ids, c_ids = _prepare(backend.model, t, prompts, cands, " {action}", 32)
    eos = t.eos_token_id
    single = [[encode_pair(t, p, c) for c in cs] for p, cs in zip(prompts, cands)]
    assert p_ids == [row[0][0] for row in single]
    assert c_ids == [[a for _, a in row] for row in single]
    assert p_ids[1] == [eos] and c_ids[1] == [[t(" ", add_special_tokens=False)["input_ids"][0], eos]]
    assert all(a[-1] == eos for row in c_ids for a in row)  # the end of every answer is scored
