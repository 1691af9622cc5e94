import math

import numpy as np
import pytest
import torch

from pzstream.model.config import WorldModelConfig
from pzstream.model.targets import Window, build_windows, collate, n_step_values, stitch
from wm_helpers import make_segment


def _two_segments():
    a = make_segment([1, 0, 2], root_values=[math.nan, 0.5, math.nan], step0=0)
    b = make_segment([0, 3], dones=[False, True], root_values=[1.0, 5.0], step0=3)
    return a, b


def test_n_step_values_by_hand():
    r = np.array([1, 0, 2, 0, 3], np.float32)
    done = np.array([0, 0, 0, 0, 1], bool)
    boot = np.array([0, 0.5, 0, 1.0, 5.0], np.float32)
    z = n_step_values(r, done, boot, n=2, discount=0.9)
    np.testing.assert_allclose(z, [1 + 0.81 * 0, 0 + 0.9 * 2 + 0.81 * 1.0, 2 + 0.81 * 5.0, 0.9 * 3, 3.0], rtol=1e-6)
    z5 = n_step_values(r, done, boot, n=5, discount=0.9)  # every horizon is cut by the done
    np.testing.assert_allclose(z5[0], 1 + 0.81 * 2 + 0.9 ** 4 * 3, rtol=1e-6)


def test_n_step_values_chunk_cut_bootstraps_last_step():
    z = n_step_values(np.ones(3, np.float32), np.zeros(3, bool), np.array([0, 0, 4.0], np.float32), 5, 0.5)
    np.testing.assert_allclose(z, [1 + 0.5 + 0.25 * 4, 1 + 0.5 * 4, 4.0])


def test_build_windows_stitches_and_uses_root_values_nan_as_zero():
    a, b = _two_segments()
    cfg = WorldModelConfig(td_steps=2, discount=0.9)
    windows = build_windows([b, a], cfg)  # out of order on purpose
    assert len(windows) == 5 and len({id(w.episode) for w in windows}) == 1
    ep = windows[0].episode
    assert ep.observations == [f"room {i}" for i in range(5)]
    assert ep.step0 == 0 and ep.done.tolist() == [False] * 4 + [True]
    # bootstrap: root_value where finite, NaN -> 0
    np.testing.assert_allclose(ep.value_target, [1.0, 1.8 + 0.81, 2 + 0.81 * 5.0, 2.7, 3.0], rtol=1e-6)


def test_build_windows_value_fn_overrides_bootstrap():
    a, b = _two_segments()
    cfg = WorldModelConfig(td_steps=2, discount=0.9)
    ep = build_windows([a, b], cfg, value_fn=lambda e: np.full(len(e), 10.0, np.float32))[0].episode
    np.testing.assert_allclose(ep.value_target[0], 1 + 0.81 * 10.0, rtol=1e-6)


def test_stitch_duplicates_gaps_and_identity():
    a, b = _two_segments()
    other_collector = make_segment([1, 1], collector="c1", step0=0)
    gap = make_segment([1], step0=9)
    eps = stitch([a, b, a, other_collector, gap])
    lengths = sorted((e.key[1], e.step0, len(e)) for e in eps)
    assert lengths == [("c0", 0, 5), ("c0", 9, 1), ("c1", 0, 2)]
    # a segment after a done starts a new chunk even if step0 lines up
    after = make_segment([0], step0=5)
    assert sorted(len(e) for e in stitch([a, b, after])) == [1, 5]


def test_collate_masks_and_padding():
    a, b = _two_segments()
    cfg = WorldModelConfig(context_steps=2, unroll_steps=3, td_steps=2, discount=0.9)
    windows = build_windows([a, b], cfg)
    ep = windows[0].episode
    batch = collate([Window(ep, 3), Window(ep, 0)], cfg)
    assert batch.obs_idx.shape == (2, 6) and batch.act_idx.shape == (2, 5)
    assert batch.cand_idx.shape == (2, 4, 3) and batch.reward.shape == (2, 3)
    assert batch.step_valid[0].tolist() == [True, True, True, True, False, False]
    assert batch.step_valid[1].tolist() == [False, False, True, True, True, True]
    assert batch.unroll_valid.tolist() == [[True, True, False, False], [True] * 4]
    assert [batch.texts[i] for i in batch.obs_idx[0, :4].tolist()] == ["room 1", "room 2", "room 3", "room 4"]
    assert batch.texts[batch.act_idx[0, 2]] == ep.action_text[3]
    assert batch.reward[0].tolist() == [0.0, 3.0, 0.0] and batch.reward[1].tolist() == [1.0, 0.0, 2.0]
    assert batch.action[0].tolist() == [int(ep.action_index[3]), int(ep.action_index[4]), -1, -1]
    assert not batch.cand_mask[0, 2:].any() and batch.cand_mask[0, :2].all()
    assert torch.allclose(batch.visits[0, :2].sum(-1), torch.ones(2))
    assert batch.value_target[0, :2].tolist() == pytest.approx([2.7, 3.0])


def test_collate_caps_candidates_and_renormalises():
    seg = make_segment([0, 0], k=5)
    cfg = WorldModelConfig(max_candidates=3, unroll_steps=1)
    batch = collate(build_windows([seg], cfg)[:1], cfg)
    assert batch.cand_idx.shape[-1] == 3
    assert torch.allclose(batch.visits[0, 0], torch.full((3,), 1 / 3))
