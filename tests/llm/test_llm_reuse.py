"""The LLM's reuse: the shared-prefix KV cache (exact) and the prior memo (bounded, emptied on new weights)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pzstream.config import load_config
from pzstream.llm.backend import TransformersBackend
from pzstream.llm.memo import PriorMemo, memo_key
from pzstream.llm.prefix import PrefixCache, common_prefix_len
from pzstream.llm.prior import candidate_logprobs_naive, candidate_logprobs_split, candidate_logprobs_tree
from pzstream.llm.prompts import PromptConfig, build_prompt

ROOMS = ["You are in a dark room. It is pitch black.",
         "West of House\nYou are standing in an open field west of a white house, with a boarded front door.",
         "Behind House\nYou are behind the white house. A path leads into the forest to the east."]
CANDS = [["go north", "take lamp", "open the small mailbox"], ["west", "climb tree"], ["read book", "up", "down", "look"]]


@pytest.fixture(scope="module")
def backend():
    return TransformersBackend("tiny", prompt_config=PromptConfig.orz())


def prompts(cfg: PromptConfig, rooms: list[str], step: int = 0) -> list[str]:
    return [build_prompt(cfg, [("A hall.", "look", 0.0)] * (step % 3), r, None) for r in rooms]


def _maxdiff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_common_prefix_len():
    assert common_prefix_len([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_len([], [1]) == 0 and common_prefix_len([7, 8], [7, 8]) == 2


@pytest.mark.parametrize("tree_fn", [candidate_logprobs_tree, candidate_logprobs_split], ids=["tree", "split"])
def test_the_prefix_cache_scores_exactly_what_a_full_forward_scores_and_is_reused(backend, tree_fn):
    m, t, cfg = backend.model, backend.tokenizer, backend.prompt_config
    cache = PrefixCache()
    cont = cfg.continuation_template
    for step, rooms in enumerate([ROOMS[:1], ROOMS, ROOMS[1:], ROOMS[::-1]]):
        ps = prompts(cfg, rooms, step)
        cands = [CANDS[ROOMS.index(r)] for r in rooms]
        got = tree_fn(m, t, ps, cands, continuation=cont, prefix=cache)
        assert _maxdiff(got, tree_fn(m, t, ps, cands, continuation=cont)) < 1e-5
        assert _maxdiff(got, candidate_logprobs_naive(m, t, ps, cands, continuation=cont)) < 1e-3
    # one build (the first root alone), then cut to the shared template head and reused
    assert cache.builds == 1 and cache.hits == 3
    assert len(cache.ids) >= 100 and cache.tokens_saved > 0  # the ORZ preamble is long


@pytest.mark.parametrize("tree_fn", [candidate_logprobs_tree, candidate_logprobs_split], ids=["tree", "split"])
def test_the_prefix_cache_never_serves_keys_of_old_weights(backend, tree_fn):
    m, t, cfg = backend.model, backend.tokenizer, backend.prompt_config
    cache = PrefixCache()
    ps, cands = prompts(cfg, ROOMS), CANDS
    cont = cfg.continuation_template
    tree_fn(m, t, ps, cands, continuation=cont, prefix=cache)
    saved = {k: v.clone() for k, v in m.state_dict().items()}
    try:
        with torch.no_grad():
            for p in m.parameters():  # an optimizer step, in place
                p.add_(0.05 * torch.randn_like(p))
        got = tree_fn(m, t, ps, cands, continuation=cont, prefix=cache)
        assert cache.builds == 2
        assert _maxdiff(got, tree_fn(m, t, ps, cands, continuation=cont)) < 1e-5
    finally:
        m.load_state_dict(saved)


@pytest.mark.parametrize("tree_fn", [candidate_logprobs_tree, candidate_logprobs_split], ids=["tree", "split"])
def test_prompts_without_a_shared_head_run_without_the_cache(backend, tree_fn):
    m, t = backend.model, backend.tokenizer
    cache = PrefixCache(min_tokens=8)
    ps = ["Once upon a time there was a troll.", "The lamp is lit and the room is bright."]
    got = tree_fn(m, t, ps, CANDS[:2], prefix=cache)
    assert cache.builds == 0 and _maxdiff(got, tree_fn(m, t, ps, CANDS[:2])) < 1e-6
    with pytest.raises(ValueError):
        PrefixCache(min_tokens=0)


def test_the_memo_is_bounded_in_entries_and_bytes_least_recent_out_first():
    memo = PriorMemo(max_entries=2, max_bytes=10_000)
    a, b, c = (memo_key(p, ["x", "y"]) for p in ("room a", "room b", "room c"))
    memo.put(a, np.ones(2, np.float32))
    memo.put(b, np.ones(2, np.float32))
    assert memo.get(a) is not None  # a is now the most recent
    memo.put(c, np.ones(2, np.float32))
    assert memo.get(b) is None and memo.get(a) is not None and len(memo) == 2
    assert (memo.hits, memo.misses) == (2, 1)
    small = PriorMemo(max_entries=100, max_bytes=64)
    small.put(memo_key("p" * 100, ["x"]), np.ones(2, np.float32))  # larger than the whole memo: not kept
    small.put(memo_key("q" * 40, ["x"]), np.ones(2, np.float32))
    small.put(memo_key("r" * 40, ["x"]), np.ones(2, np.float32))
    assert len(small) == 1 and small.get(memo_key("r" * 40, ["x"])) is not None
    memo.clear()
    assert len(memo) == 0


def test_local_prior_answers_repeats_from_the_memo_until_new_weights_arrive():
    from pzstream.llm.factory import LocalPrior

    cfg = load_config(None, [])
    prior = LocalPrior(cfg.llm)
    hist = [[("A hall.", "look", 0.0)], [], []]
    first = prior.prior(hist, ROOMS, CANDS)
    assert prior.memo.misses == 3 and prior.memo.hits == 0
    first[0][:] = 0  # a caller's change does not reach the memo
    again = prior.prior(hist, ROOMS, CANDS)
    assert prior.memo.hits == 3
    fresh = LocalPrior(cfg.llm).prior(hist, ROOMS, CANDS)
    assert _maxdiff(again, fresh) < 1e-6 and float(again[0].sum()) == pytest.approx(1.0, abs=1e-5)
    prior.load(prior.backend.state_dict_bytes(), 1)
    assert len(prior.memo) == 0


def test_the_scoring_llm_loads_in_the_dtype_the_config_names():
    from pzstream.llm.factory import LocalPrior, scoring_dtype

    assert scoring_dtype(load_config(None, []).llm) == torch.float32
    assert scoring_dtype(load_config(None, ["llm.dtype=bfloat16"]).llm) == torch.bfloat16
    # bfloat16 scores on the CPU too, close to float32, and loads float32 weights by casting them
    hist = [[("A hall.", "look", 0.0)], [], []]
    full = LocalPrior(load_config(None, []).llm)
    half = LocalPrior(load_config(None, ["llm.dtype=bfloat16"]).llm)
    assert next(half.backend.model.parameters()).dtype == torch.bfloat16
    assert _maxdiff(half.prior(hist, ROOMS, CANDS), full.prior(hist, ROOMS, CANDS)) < 0.05
    half.load(full.backend.state_dict_bytes(), 1)
    assert next(half.backend.model.parameters()).dtype == torch.bfloat16 and half.version == 1


def test_memo_answers_computes_only_what_it_lacks_in_one_call_and_hands_out_copies():
    memo = PriorMemo()
    calls: list[list[int]] = []

    def compute(todo: list[int]) -> list[np.ndarray]:
        calls.append(todo)
        return [np.full(2, float(i)) for i in todo]

    a, b, c = (memo_key(p, ["look"]) for p in "abc")
    first = memo.answers([a, b], compute)
    second = memo.answers([b, c, a], compute)
    assert calls == [[0, 1], [1]]  # "c" alone was new, at index 1 of the second call
    assert [x[0] for x in first] == [0.0, 1.0] and [x[0] for x in second] == [1.0, 1.0, 0.0]
    second[0][:] = 9.0  # a caller's change does not reach the memo
    assert memo.answers([b], compute)[0][0] == 1.0
