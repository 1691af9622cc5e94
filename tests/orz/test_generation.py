"""Free-mode sampling batches every prompt into one left-padded ``generate`` (issue 13): the
batch gives each prompt the answer it gets alone."""
from __future__ import annotations

import pytest
import torch

from pzstream.llm.tiny import resolve_model
from pzstream.orz.rollout import left_padded, transformers_sample


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("tiny")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def test_left_padding_puts_each_prompt_at_the_right_edge():
    ids, mask = left_padded([[5, 6, 7], [9]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        left_padded([[1], []], pad=0)


def test_batched_greedy_answers_equal_one_prompt_at_a_time(tiny):
    model, tok = tiny
    prompts = [tok("go north then open the mailbox")["input_ids"], tok("look")["input_ids"],
               tok("take the lamp and go down into the cellar")["input_ids"]]
    batched = transformers_sample(model, tok, prompts, 1, 12, temperature=0.0, seed=0)
    for p, got in zip(prompts, batched):
        ids = torch.tensor([p])
        alone = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                               temperature=None, top_k=None, top_p=None, pad_token_id=tok.eos_token_id,
                               eos_token_id=tok.eos_token_id)[0, len(p):].tolist()
        eos = tok.eos_token_id
        assert got[0] == (alone[:alone.index(eos) + 1] if eos in alone else alone)


def test_sampling_gives_n_answers_per_prompt_of_the_asked_length(tiny):
    model, tok = tiny
    prompts = [tok("open the door")["input_ids"], tok("west")["input_ids"]]
    out = transformers_sample(model, tok, prompts, 3, 6, temperature=1.0, seed=0, min_tokens=6)
    assert [len(a) for a in out] == [3, 3]
    assert all(len(ans) == 6 for a in out for ans in a)
    assert out == transformers_sample(model, tok, prompts, 3, 6, temperature=1.0, seed=0, min_tokens=6)  # seeded


def test_the_generation_copy_follows_the_policy_after_each_update(tiny):
    from pzstream.orz.rollout import GenerationCopy

    model, tok = tiny
    gen = GenerationCopy(model, dtype=torch.bfloat16)
    first = next(gen.model.parameters())
    assert first.dtype == torch.bfloat16 and not first.requires_grad
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    assert not torch.equal(first, next(model.parameters()).to(torch.bfloat16))
    gen.refresh()
    assert all(torch.equal(a, b.to(torch.bfloat16)) for a, b in zip(gen.model.parameters(), model.parameters()))
    out = gen.sample(tok, [tok("north")["input_ids"]], 2, 4, 1.0, 0)
    assert len(out) == 1 and len(out[0]) == 2 and all(1 <= len(a) <= 4 for a in out[0])
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(0.01)
