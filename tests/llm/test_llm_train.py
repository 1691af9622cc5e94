"""PriorZero LLM training: loss math, SFT on real segments raises held-out agreement, an RFT step."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pzstream.llm.losses import k3_kl, ppo_clip_loss, rft_loss, sft_ce_loss, sft_visit_loss
from pzstream.llm.train import LLMSample, LLMTrainer, agreement, chance, samples_from_segments, tiny_model


# ------------------------------------------------------------------ loss math


def test_ppo_clip_positive_advantage():
    old = torch.zeros(3)
    new = torch.log(torch.tensor([0.5, 1.1, 1.5]))  # ratios 0.5 (inside for A>0), 1.1 (inside), 1.5 (clipped)
    a = torch.tensor(2.0)
    got = ppo_clip_loss(new, old, a, eps=0.2)
    # per element -min(r A, clip(r) A): -min(1.0, 1.6)=-1.0, -min(2.2, 2.2)=-2.2, -min(3.0, 2.4)=-2.4
    assert math.isclose(got.item(), (-1.0 - 2.2 - 2.4) / 3, rel_tol=1e-6)


def test_ppo_clip_negative_advantage():
    old = torch.zeros(3)
    new = torch.log(torch.tensor([0.5, 1.1, 1.5]))
    a = torch.tensor(-1.0)
    got = ppo_clip_loss(new, old, a, eps=0.2)
    # -min(-r, -clip(r)) = max(r, clip(r)): 0.8 (clipped from below), 1.1, 1.5
    assert math.isclose(got.item(), (0.8 + 1.1 + 1.5) / 3, rel_tol=1e-6)


def test_ppo_clip_gradient_zero_in_clipped_region():
    new = torch.log(torch.tensor([1.5, 0.5])).requires_grad_(True)
    loss = ppo_clip_loss(new, torch.zeros(2), torch.tensor([1.0, -1.0]), eps=0.2)
    loss.backward()
    assert torch.all(new.grad == 0)  # A>0 above 1+eps and A<0 below 1-eps: no push further
    new2 = torch.zeros(2, requires_grad=True)
    ppo_clip_loss(new2, torch.zeros(2), torch.tensor([1.0, -1.0])).backward()
    assert torch.allclose(new2.grad, torch.tensor([-0.5, 0.5]))  # ratio 1: -A/n


def test_ppo_clip_mask():
    new, old = torch.log(torch.tensor([[1.0, 9.0]])), torch.zeros(1, 2)
    got = ppo_clip_loss(new, old, torch.tensor([[1.0]]), mask=torch.tensor([[True, False]]))
    assert math.isclose(got.item(), -1.0, rel_tol=1e-6)


def test_k3_kl():
    x = torch.tensor([-1.0, -2.5, -0.1])
    assert torch.allclose(k3_kl(x, x), torch.zeros(3))
    ref = torch.tensor([-1.5, -1.0, -3.0])
    d = ref - x
    assert torch.allclose(k3_kl(x, ref), torch.exp(d) - d - 1)
    assert torch.all(k3_kl(x, ref) > 0)
    assert math.isclose(k3_kl(torch.tensor(0.0), torch.tensor(math.log(2.0))).item(), 2 - math.log(2) - 1, rel_tol=1e-6)


def test_rft_loss_is_ppo_plus_kl():
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.2, -1.7]])
    a = torch.tensor([[0.7]])
    total, ppo, kl = rft_loss(lp, lp, ref, a, kl_coef=0.1)
    assert math.isclose(ppo.item(), -0.7, rel_tol=1e-6)
    assert math.isclose(kl.item(), k3_kl(lp, ref).mean().item(), rel_tol=1e-6)
    assert math.isclose(total.item(), ppo.item() + 0.1 * kl.item(), rel_tol=1e-6)


def test_sft_visit_loss_manual():
    scores = torch.tensor([-1.0, -2.0, -0.5])
    visits = torch.tensor([0.2, 0.3, 0.5])
    p = np.exp([-1.0, -2.0, -0.5])
    p /= p.sum()
    manual = -(0.2 * np.log(p[0]) + 0.3 * np.log(p[1]) + 0.5 * np.log(p[2]))
    assert math.isclose(sft_visit_loss(scores, visits).item(), manual, rel_tol=1e-6)
    # padded batch: the pad column changes nothing
    sc = torch.tensor([[-1.0, -2.0, -0.5, 0.0]])
    vis = torch.tensor([[0.2, 0.3, 0.5, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert math.isclose(sft_visit_loss(sc, vis, mask).item(), manual, rel_tol=1e-6)


def test_sft_ce_loss_manual():
    lp = torch.tensor([[-1.0, -3.0], [-2.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    assert math.isclose(sft_ce_loss(lp, mask).item(), 2.0, rel_tol=1e-6)


# ------------------------------------------------------------------ real segments


@pytest.fixture(scope="module")
def data():
    from bench.quest_teacher import collect_quest_segments, split_by_episode
    from pzstream.llm.prompts import PromptConfig

    torch.set_num_threads(1)
    segs = collect_quest_segments(240, seed=0, explore=0.5, max_episode_steps=40)
    train, held = split_by_episode(segs, held_out_every=4)
    model, tok = tiny_model()
    cfg = PromptConfig(history_len=1, max_prompt_tokens=128)
    st = samples_from_segments(train, cfg, chosen="visits", tokenizer=tok)
    sh = samples_from_segments(held, cfg, chosen="visits", tokenizer=tok)
    return model, tok, st, sh


def test_samples_from_segments_fields(data):
    _, _, st, _ = data
    assert len(st) > 100
    for s in st:
        assert 0 <= s.chosen < len(s.candidates) == len(s.visits)
        assert int(np.argmax(s.visits)) == s.chosen  # teacher's action is the most visited
        assert math.isfinite(s.advantage) and s.prompt.endswith("Action:")
    adv = np.array([s.advantage for s in st])  # random-play rows: reward-to-go, normalised
    assert abs(adv.mean()) < 0.5 and adv.std() > 0.1


def test_sft_raises_held_out_agreement(data):
    model, tok, st, sh = data
    before = agreement(model, tok, sh)
    trainer = LLMTrainer(model, tok, lr=3e-3, mode="sft")
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(40):
        m = trainer.step([st[j] for j in rng.choice(len(st), 16, replace=False)])
        losses.append(m["train/llm_sft_loss"])
        assert math.isfinite(m["train/llm_kl"])
    after = agreement(model, tok, sh)
    base = chance(sh)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert after > base + 0.15, (before, after, base)
    assert after > before + 0.15, (before, after, base)


def test_rft_step_changes_weights(data):
    model, tok, st, _ = data
    import copy

    m2 = copy.deepcopy(model)
    trainer = LLMTrainer(m2, tok, lr=1e-3, mode="rft", kl_coef=0.05)
    before = [p.detach().clone() for p in m2.parameters()]
    out = trainer.step(st[:8])
    assert math.isfinite(out["train/llm_rft_loss"]) and math.isfinite(out["train/llm_kl"])
    assert any(not torch.equal(a, b) for a, b in zip(before, m2.parameters()))
    # a second step: the reference is frozen, so the KL to it is now positive
    samples = [LLMSample(s.prompt, s.candidates, s.chosen, s.visits, s.advantage, old_logprob=-2.0) for s in st[:8]]
    out2 = trainer.step(samples)  # behaviour log-probs given: sequence-level ratio
    assert math.isfinite(out2["train/llm_rft_loss"]) and out2["train/llm_kl"] > 0


def test_rft_records_the_old_logprob_and_the_clip_acts(data):
    """The behaviour log-prob is recorded before the updates: the first update runs at ratio 1,
    later ones move the ratio away from 1 until the clip holds it."""
    model, tok, st, _ = data
    import copy

    trainer = LLMTrainer(copy.deepcopy(model), tok, lr=3e-3, mode="rft", kl_coef=0.0, clip_eps=0.05, rft_epochs=1)
    batch = [LLMSample(s.prompt, s.candidates, s.chosen, s.visits, 1.0 if i % 2 else -1.0) for i, s in enumerate(st[:8])]
    recorded = trainer.record_old_logprobs(batch)
    assert all(s.old_logprob is not None and s.old_logprob < 0 for s in recorded)
    first = trainer.step(recorded)
    assert first["train/llm_ratio_dev"] < 1e-4 and first["train/llm_clip_frac"] == 0.0  # on-policy pass
    outs = [trainer.step(recorded) for _ in range(5)]  # the same batch, the same old log-probs
    assert max(o["train/llm_ratio_dev"] for o in outs) > 0.05
    assert outs[-1]["train/llm_clip_frac"] > 0.0
    # a step on fresh samples records their old log-prob itself; with 3 epochs the clip acts within it
    t3 = LLMTrainer(copy.deepcopy(model), tok, lr=3e-3, mode="rft", kl_coef=0.0, clip_eps=0.05, rft_epochs=4)
    out = t3.step(batch)
    assert out["train/llm_ratio_dev"] > 0.05 and out["train/llm_clip_frac"] > 0.0
    assert t3.updates == 4


def test_sft_visits_step(data):
    model, tok, st, _ = data
    import copy

    trainer = LLMTrainer(copy.deepcopy(model), tok, lr=1e-3, mode="sft_visits")
    out = trainer.step(st[:4])
    assert math.isfinite(out["train/llm_sft_loss"]) and out["train/llm_sft_loss"] > 0


def full_row_scores(model, tok, samples):
    """Every (prompt, candidate) as its own full row: the plain teacher-forced reference."""
    from pzstream.llm.logprobs import mean_logprob, pack, token_logprobs
    from pzstream.llm.tokens import encode_pair, pad_id

    pk = pack([encode_pair(tok, s.prompt, c) for s in samples for c in s.candidates], pad_id(tok))
    return mean_logprob(token_logprobs(model, pk), pk.mask)


def test_sft_visits_scores_equal_full_rows_in_values_and_gradients(data):
    """sft_visits runs each prompt once and its candidates on the KV cache: the same scores, and the
    same gradients, as a full row per candidate (answers of 1 to several tokens, ragged)."""
    from pzstream.llm.train import candidate_scores

    model, tok, st, _ = data
    model.train()
    samples = [s for s in st if len(s.candidates) > 2][:3]
    params = [p for p in model.parameters() if p.requires_grad]
    shared = torch.cat(candidate_scores(model, tok, samples))
    g_shared = torch.autograd.grad((shared * torch.linspace(-1, 1, len(shared))).sum(), params)
    full = full_row_scores(model, tok, samples)
    g_full = torch.autograd.grad((full * torch.linspace(-1, 1, len(full))).sum(), params)
    assert torch.allclose(shared, full, atol=1e-4), (shared, full)
    for a, b in zip(g_shared, g_full):
        assert torch.allclose(a, b, atol=1e-5 + 1e-3 * float(b.abs().max())), float((a - b).abs().max())


@pytest.mark.slow
def test_sft_visits_step_on_the_real_model_with_many_candidates():
    """A batch of 8 states with 30 candidates each after ~250-token prompts: as full rows per
    candidate this step was killed for memory on a 24 GiB machine; now it runs and moves the
    candidates' scores towards the visits."""
    from pzstream.llm.backend import load_model_and_tokenizer
    from pzstream.llm.train import candidate_scores

    model, tok = load_model_and_tokenizer("smollm2-135m-instruct")
    verbs = ["open", "take", "drop", "push", "pull", "read", "eat", "throw", "climb", "examine"]
    cands = [f"{v} {o}" for v in verbs for o in ("mailbox", "leaflet", "door")]
    text = ("West of House. You are standing in an open field west of a white house, with a boarded front "
            "door. There is a small mailbox here. ") * 8 + "Action:"
    visits = np.full(len(cands), 0.1 / (len(cands) - 1), np.float32)
    visits[0] = 0.9  # the search's choice: open mailbox
    batch = [LLMSample(text, cands, 0, visits, 0.0) for _ in range(8)]
    before = candidate_scores(model, tok, batch[:1])[0].detach()
    trainer = LLMTrainer(model, tok, lr=1e-5, mode="sft_visits")
    for _ in range(2):
        out = trainer.step(batch)
    after = candidate_scores(model, tok, batch[:1])[0].detach()
    assert math.isfinite(out["train/llm_sft_loss"])
    assert torch.log_softmax(after, 0)[0] > torch.log_softmax(before, 0)[0]


def test_advantage_from_value_targets():
    """With search root values: advantage = value target - root value (given or n-step)."""
    import dataclasses

    from bench.quest_teacher import collect_quest_segments
    from pzstream.llm.prompts import PromptConfig
    from pzstream.model.targets import n_step_values

    seg = collect_quest_segments(6, seed=1, segment_steps=6)[0]
    rv = np.linspace(0.1, 0.6, seg.n_steps).astype(np.float32)
    seg = dataclasses.replace(seg, root_value=rv)
    cfg = PromptConfig(history_len=1)
    z = np.arange(seg.n_steps, dtype=np.float32)
    got = [s.advantage for s in samples_from_segments([seg], cfg, [z])]
    assert np.allclose(got, z - rv, atol=1e-6)
    nstep = n_step_values(seg.reward, seg.done, rv, 5, 0.99)
    got = [s.advantage for s in samples_from_segments([seg], cfg, td_steps=5, discount=0.99)]
    assert np.allclose(got, nstep - rv, atol=1e-6)
    chosen = [s.chosen for s in samples_from_segments([seg], cfg)]
    assert chosen == [int(i) for i in seg.action_index]  # default: the executed action


def test_rft_advantage_is_centred_when_the_root_values_are_right():
    """Root values searched at the world model's discount, and exact: z - V must be 0, not pushed
    down by an n-step target taken at another discount (the old default, 0.99)."""
    import dataclasses

    from bench.quest_teacher import collect_quest_segments
    from pzstream.config import Config
    from pzstream.llm.prompts import PromptConfig

    wm = Config().world_model()
    seg = collect_quest_segments(40, seed=2, segment_steps=40)[0]
    T = seg.n_steps
    reward = np.ones(T, np.float32)
    done = np.zeros(T, bool)
    done[-1] = True
    value = np.zeros(T, np.float32)  # the true discounted return of the (finished) chunk
    acc = 0.0
    for t in range(T - 1, -1, -1):
        acc = 1.0 + wm.discount * acc
        value[t] = acc
    seg = dataclasses.replace(seg, reward=reward, done=done, root_value=value)
    adv = np.array([s.advantage for s in samples_from_segments([seg], PromptConfig(history_len=1))])
    assert np.abs(adv).max() < 1e-3, adv
    off = np.array([s.advantage for s in samples_from_segments([seg], PromptConfig(history_len=1), discount=0.99)])
    assert off.mean() < -0.2 and (off < 1e-6).all()  # the old default: every chosen action pushed down
