"""PPO/GRPO math against values computed by hand (the policy losses are pzstream.llm.losses, shared with RFT)."""
from __future__ import annotations

import math

import pytest
import torch

from pzstream.llm.losses import k3_kl, masked_mean, ppo_clip_loss
from pzstream.orz.ppo_math import gae, grpo_advantages, last_token_scores, normalize_advantages, value_loss

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_reward_lands_on_the_last_real_token():
    s = last_token_scores(torch.tensor([2.0, -1.0]), MASK)
    assert s.tolist() == [[0.0, 0.0, 2.0], [0.0, -1.0, 0.0]]


def test_gae_by_hand():
    r = last_token_scores(torch.tensor([1.0, 1.0]), MASK)
    v = torch.tensor([[0.5, 0.25, 0.5], [0.2, 0.4, 9.0]])  # 9.0 sits on padding and must not count
    adv, ret = gae(r, v, MASK, gamma=1.0, lambd=1.0)
    # lambda = gamma = 1: A_t = sum of future rewards - V_t
    assert torch.allclose(adv[0], torch.tensor([0.5, 0.75, 0.5]))
    assert torch.allclose(adv[1], torch.tensor([0.8, 0.6, 0.0]))
    assert torch.allclose(ret[0], torch.tensor([1.0, 1.0, 1.0]))
    adv, _ = gae(r, v, MASK, gamma=0.5, lambd=0.5)
    # row 0: delta = [0 + .5*.25 - .5, 0 + .5*.5 - .25, 1 - .5] = [-.375, 0, .5]
    # A2 = .5; A1 = 0 + .25*.5 = .125; A0 = -.375 + .25*.125 = -.34375
    assert torch.allclose(adv[0], torch.tensor([-0.34375, 0.125, 0.5]))


def test_normalized_advantages_are_whitened_over_real_tokens():
    adv = normalize_advantages(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]]), MASK)
    real = adv[MASK.bool()]
    assert abs(real.mean().item()) < 1e-6 and abs(real.std(unbiased=False).item() - 1) < 1e-4
    assert adv[1, 2] == 0


def test_grpo_groups_and_zero_std_guard():
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]), group_size=4)
    assert torch.allclose(adv[:4], torch.tensor([1.0, -1.0, 1.0, -1.0]), atol=1e-5)
    assert torch.equal(adv[4:], torch.zeros(4)), "equal rewards in a group: no signal, not NaN"
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages(torch.zeros(4), group_size=3)


def test_policy_loss_clips_both_ways():
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    up = torch.full((1, 2), math.log(1.5))  # ratio 1.5
    assert torch.isclose(ppo_clip_loss(up, old, torch.ones(1, 2), 0.2, mask), torch.tensor(-1.2))  # clipped at 1.2
    assert torch.isclose(ppo_clip_loss(up, old, -torch.ones(1, 2), 0.2, mask), torch.tensor(1.5))  # min keeps 1.5 * -1
    down = torch.full((1, 2), math.log(0.5), requires_grad=True)
    loss = ppo_clip_loss(down, old, torch.ones(1, 2), 0.2, mask)
    assert torch.isclose(loss, torch.tensor(-0.5))
    loss.backward()
    assert torch.all(down.grad != 0)  # below the clip with a positive advantage: still pushed up


def test_value_loss_and_k3():
    mask = torch.ones(1, 1)
    v, old, ret = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]])
    assert torch.isclose(value_loss(v, old, ret, mask, value_clip=None), torch.tensor(0.5))
    assert torch.isclose(value_loss(v, old, ret, mask, value_clip=0.2), torch.tensor(0.5 * 1.8 ** 2))
    lp = torch.tensor([[-1.0, -2.0]])
    assert masked_mean(k3_kl(lp, lp), torch.ones(1, 2)) == 0
    d = 0.5
    assert torch.isclose(masked_mean(k3_kl(torch.tensor([[-1.0]]), torch.tensor([[-1.0 + d]])), mask),
                         torch.tensor(math.exp(d) - d - 1))
