"""One encoding of (prompt, answer) for the prior, SFT/RFT and PPO, and one truncation rule for the
local and the central prior, checked with a byte-level BPE tokenizer that has Qwen2's pre-tokenizer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pzstream.llm.prompts import PromptConfig, build_prompt, scoring_prompts
from pzstream.llm.tokens import answer_ids, cap_prompt, encode_pair, encode_roots


@pytest.fixture(scope="module")
def qwen_like(tmp_path_factory):
    """A Qwen2-rule BPE tokenizer WITHOUT the tiny model's added ``<answer>`` tokens (a real Qwen2
    tokenizer has none), trained where ``>open`` is a frequent piece, and a random Qwen2 on it."""
    from pzstream.llm.tiny import EOS, _corpus, build_bpe_tokenizer, build_model

    corpus = _corpus(sentences=500) + ["</think>\n<answer>open mailbox</answer>", "<answer>open door</answer>"] * 50
    tok = build_bpe_tokenizer(corpus, vocab_size=1500, added_tokens=())
    path = tmp_path_factory.mktemp("qwen_like")
    build_model(len(tok), tok.convert_tokens_to_ids(EOS)).save_pretrained(path)
    tok.save_pretrained(path)
    from transformers import AutoTokenizer

    return str(path), AutoTokenizer.from_pretrained(path)


def test_joint_tokenisation_merges_across_the_answer_tag(qwen_like):
    """Why the answer is tokenised apart: jointly, ``>open`` is one piece the prior never scores."""
    _, tok = qwen_like
    joint = tok.convert_ids_to_tokens(tok("</think>\n<answer>open mailbox</answer>", add_special_tokens=False)["input_ids"])
    assert ">open" in joint
    p, a = encode_pair(tok, "Assistant: <think></think>\n<answer>", "open mailbox", "{action}</answer>")
    assert ">open" not in tok.convert_ids_to_tokens(p + a)
    assert a == encode_pair(tok, "something else entirely <answer>", "open mailbox", "{action}</answer>")[1]


def test_ppo_trains_the_token_paths_the_prior_scores(qwen_like):
    """Choice-mode PPO's (prompt, response) ids are the prior's (prompt, answer) ids, and the
    log-prob PPO trains on is exactly the one the prior's score is made of."""
    from pzstream.config import PPOSection
    from pzstream.llm.backend import TransformersBackend
    from pzstream.orz.episode import rollout
    from pzstream.orz.prompt_sets import walkthrough_samples
    from pzstream.orz.runtime import InProcessRuntime

    path, tok = qwen_like
    samples = walkthrough_samples(max_candidates=3, limit=2)
    cfg = PPOSection(enabled=True, runtime="inprocess", rollout_batch_size=2, fire_threshold=2, n_samples_per_prompt=6,
                     micro_train_batch_size=4, policy_update_steps=1, critic_update_steps=1, prompt_max_len=256)
    rt = InProcessRuntime(cfg, path)
    ro = rollout(rt, samples, cfg, history_len=3, seed=0)

    pcfg = PromptConfig.orz(history_len=3, max_prompt_tokens=256)
    prompts = scoring_prompts(tok, pcfg, [s.history for s in samples], [s.observation for s in samples],
                              [s.candidates for s in samples], list_candidates=True)
    cands = [s.candidates for s in samples]
    p_ids, a_ids = encode_roots(tok, prompts, cands, pcfg.continuation_template)
    prior = TransformersBackend(model=path, prompt_config=pcfg).mean_logprobs(prompts, cands)
    texts = ro.texts(tok)
    for i, group in enumerate(ro.responses):
        assert ro.prompt_ids[i] == p_ids[i]
        for r, text in zip(group, texts[i]):
            k = a_ids[i].index(list(r))  # raises if PPO's answer is not one the prior scores
            ppo_sum = float(rt.policy.logprobs([(ro.prompt_ids[i], list(r))]).sum())
            assert ppo_sum == pytest.approx(prior[i][k] * len(r), abs=1e-3)
            assert text == f"</think>\n<answer>{cands[i][k]}</answer>"  # what the reward reads


def test_the_end_of_the_answer_is_scored():
    """As PriorZero scores ``Action: a<eos>``: "go" pays for ending where "go north" goes on."""
    from pzstream.llm.backend import TransformersBackend
    from pzstream.llm.logprobs import pack, token_logprobs

    be = TransformersBackend(model="tiny")
    tok, eos = be.tokenizer, be.tokenizer.eos_token_id
    go, go_north = answer_ids(tok, "go"), answer_ids(tok, "go north")
    assert go[-1] == eos and go_north[-1] == eos
    assert go_north[:len(go)] != go  # not a prefix: the two answers part at "go"'s end
    prompt = "West of House. You are standing in an open field. Action:"
    got = be.mean_logprobs([prompt], [["go", "go north"]])[0]
    p = encode_pair(tok, prompt, "go")[0]
    with torch.no_grad():
        lp = token_logprobs(be.model, pack([(p, go), (p, go_north)], tok.pad_token_id))
    assert got[0] == pytest.approx(float(lp[0, :len(go)].mean()), abs=1e-4)
    assert got[1] == pytest.approx(float(lp[1, :len(go_north)].mean()), abs=1e-4)
    assert len(go) == len(tok(" go", add_special_tokens=False)["input_ids"]) + 1


def test_local_and_central_prior_score_the_same_ids_for_a_long_history(monkeypatch):
    from pzstream.config import LLMSection
    from pzstream.llm.factory import LocalPrior, prompt_config
    from pzstream.roles.prior_server import RemotePrior, request_roots

    lc = LLMSection(max_prompt_tokens=96, history_len=3)
    local = LocalPrior(lc)
    tok = local.backend.tokenizer
    seen: list[str] = []

    def score(prompts, candidates):
        seen.extend(prompts)
        return [np.log(np.full(len(c), 1.0 / len(c))) for c in candidates]

    monkeypatch.setattr(local.backend, "score", score)
    long_obs = "You are in a maze of twisty little passages, all alike. " * 6
    histories = [[(long_obs, "go north", 0.0), (long_obs, "take lamp", 1.0), (long_obs, "open door", 0.0)],
                 [(long_obs, "look", 0.0)]]
    observations = ["A dark room. There is a lamp here.", long_obs]
    candidates = [["take lamp", "go south"], ["go east", "wait"]]
    assert all(len(tok(build_prompt(local.prompt_cfg, h, o), add_special_tokens=False)["input_ids"]) > 96
               for h, o in zip(histories, observations))  # both need cutting
    local.prior(histories, observations, candidates)

    remote = RemotePrior("tcp://127.0.0.1:9", 0.1, prompt_config(lc), model=lc.model)
    try:
        req = remote.request(histories, observations, candidates)
    finally:
        remote._sock.close(0)
        remote._ctx.term()
    served, served_cands = request_roots(tok, req, lc.max_prompt_tokens)
    assert served_cands == candidates
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in seen]
    assert [tok(p, add_special_tokens=False)["input_ids"] for p in served] == ids
    assert all(len(x) <= 96 for x in ids)
    assert "Current Situation" in served[0]  # the rule drops old history, not the current observation


def test_cap_prompt_keeps_the_end():
    from pzstream.llm.train import tiny_model

    _, tok = tiny_model()
    text = "one two three four five six seven eight nine ten " * 5 + "Action:"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert cap_prompt(tok, text, len(ids)) == text
    cut = cap_prompt(tok, text, 10)
    assert cut.endswith("Action:") and len(tok(cut, add_special_tokens=False)["input_ids"]) <= 10
    with pytest.raises(ValueError, match="max_tokens"):
        cap_prompt(tok, text, 0)


def test_texts_are_tokenised_once_and_the_table_stays_bounded(qwen_like):
    """encode_many keeps each text's ids (least recently used out first): the ids equal a plain
    tokenizer call, and the scorer's encode of a prompt that fit_prompt measured finds it."""
    from pzstream.llm.prompts import fit_prompt
    from pzstream.llm.tokens import TextIds, encode_many, text_ids

    _, tok = qwen_like
    texts = ["open mailbox", "north", "take the brass lantern", "open mailbox"]
    plain = [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
    table = TextIds(capacity=3)
    assert table.encode(tok, texts) == plain
    assert (table.hits, table.misses) == (1, 3)  # the repeat within one call is encoded once
    assert table.encode(tok, ["north"]) == plain[1:2] and table.hits == 2
    table.encode(tok, ["west"])  # a fourth text: the least recently used ("open mailbox") goes
    assert len(table._ids) == 3 and "open mailbox" not in table._ids and "north" in table._ids

    tok._pzstream_text_ids = TextIds()
    prompt = fit_prompt(tok, PromptConfig(max_prompt_tokens=1024), [("West of House.", "north", 0.0)], "North of House.")
    seen = text_ids(tok)
    before = (seen.hits, seen.misses)
    p_ids, a_ids = encode_roots(tok, [prompt], [["open mailbox", "north"]])
    assert seen.hits == before[0] + 1 and seen.misses == before[1] + 2  # the prompt found, two answers new
    assert p_ids[0] == encode_many(tok, [prompt])[0] == list(tok(prompt, add_special_tokens=False)["input_ids"])
    encode_roots(tok, [prompt], [["open mailbox", "north"]])
    assert seen.misses == before[1] + 2  # the answers too, the second time
