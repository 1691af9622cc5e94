import numpy as np
import pytest
import torch

from pzstream.model.config import WorldModelConfig
from pzstream.model.inference import SearchAdapter
from pzstream.model.support import logits_to_scalar
from pzstream.model.world_model import NEG, WorldModel, load_weights_bytes, weights_bytes

CANDS = [["go north", "take lamp", "open door"], ["look", "inventory"], ["eat apple"]]
OBS = ["You are in a kitchen. A lamp is here.", "A dark cellar.", "An orchard with an apple tree."]
HIST = [[("West of house.", "go east"), ("Behind house.", "open window")], [], [("Garden.", "go north")]]


def _model(**kw) -> WorldModel:
    torch.manual_seed(0)
    m = WorldModel(WorldModelConfig(**kw))
    with torch.no_grad():  # give the zero-initialised value/reward heads something to say
        for head in (m.value_head, m.reward_head):
            head[-1].weight.normal_(std=0.5)
    return m.eval()


def _full_forward(m: WorldModel, ad: SearchAdapter, handle: int, cands: list[str]):
    """value, prior logits, reward recomputed from scratch on the handle's token sequence."""
    tokens, valid = ad.node_tokens(handle)
    with torch.no_grad():
        h, _ = m.transformer(tokens[None], torch.arange(len(tokens)), valid[None])
        keys = m.embed_texts(cands)[2]
        value = logits_to_scalar(m.value_logits(h[0, -1]), m.cfg.value_support)
        prior = m.policy_logits(h[0, -1], keys, torch.ones(len(cands), dtype=torch.bool))
        reward = logits_to_scalar(m.reward_logits(h[0, -2]), m.cfg.reward_support)
    return float(value), prior.numpy(), float(reward)


def test_root_shapes_masking_and_handles():
    m = _model()
    ad = SearchAdapter(m)
    out = ad.root(HIST, OBS, CANDS)
    prior, value, handle, legal = out  # unpacks like a tuple
    assert prior.shape == (3, 3) and prior.dtype == np.float32
    assert value.shape == (3,) and value.dtype == np.float32
    assert handle.dtype == np.int64 and len(set(handle.tolist())) == 3
    assert legal.tolist() == [[True] * 3, [True, True, False], [True, False, False]]
    assert (prior[~legal] <= NEG / 2).all() and np.isfinite(prior[legal]).all()
    rec = ad.recurrent(handle, np.array([2, 1, 0]))
    assert rec.reward.shape == (3,) and rec.value.shape == (3,) and rec.prior_logits.shape == (3, 3)
    assert rec.handle.dtype == np.int64
    assert len(set(rec.handle.tolist()) | set(handle.tolist())) == 6
    assert (rec.prior_logits[~legal] <= NEG / 2).all()  # imagined states reuse the root's candidates
    with pytest.raises(ValueError, match="candidates"):
        ad.recurrent(handle[1:2], np.array([2]))
    ad.reset()
    with pytest.raises(KeyError):
        ad.recurrent(handle[:1], np.array([0]))


@pytest.mark.parametrize("depth", [1, 3, 6])  # 6 steps outgrow max_tokens (C=1, U=2) and rebuild the cache
def test_cached_recurrent_equals_full_forward(depth):
    m = _model(context_steps=1, unroll_steps=2)
    ad = SearchAdapter(m)
    out = ad.root(HIST, OBS, CANDS)
    h = out.handle
    for step in range(depth):
        rec = ad.recurrent(h, np.array([step % 3, step % 2, 0]))
        h = rec.handle
        assert max(len(ad.node_tokens(x)[0]) for x in h) <= m.cfg.max_tokens
    for b in range(3):
        value, prior, reward = _full_forward(m, ad, int(h[b]), CANDS[b])
        # the scalars are an expectation over 2S+1 bins passed through h^-1, which turns float32 rounding
        # (the prior logits agree to ~1e-8) into up to ~2e-4 with one torch thread: a wrong cache is off by far more
        assert rec.value[b] == pytest.approx(value, abs=1e-3)
        assert rec.reward[b] == pytest.approx(reward, abs=1e-3)
        np.testing.assert_allclose(rec.prior_logits[b, :len(CANDS[b])], prior, atol=1e-4)


def test_root_equals_full_forward_and_batching_mixed_depths():
    m = _model()
    ad = SearchAdapter(m)
    out = ad.root(HIST, OBS, CANDS)
    for b in range(3):
        tokens, valid = ad.node_tokens(int(out.handle[b]))
        assert len(tokens) == 2 * m.cfg.context_steps + 1
        with torch.no_grad():
            h, _ = m.transformer(tokens[None], torch.arange(len(tokens)), valid[None])
            v = float(logits_to_scalar(m.value_logits(h[0, -1]), m.cfg.value_support))
        assert out.value[b] == pytest.approx(v, rel=1e-4, abs=1e-4)  # h^-1 amplifies float noise ~11x at |v|~30
    deep = ad.recurrent(out.handle[:1], np.array([0])).handle
    deep = ad.recurrent(deep, np.array([1])).handle
    mixed = ad.recurrent(np.array([deep[0], out.handle[1]]), np.array([2, 1]))
    alone = [ad.recurrent(deep, np.array([2])), ad.recurrent(out.handle[1:2], np.array([1]))]
    for b in range(2):
        assert mixed.value[b] == pytest.approx(alone[b].value[0], abs=1e-5)
        assert mixed.reward[b] == pytest.approx(alone[b].reward[0], abs=1e-5)


def test_weights_bytes_round_trip_and_mismatch():
    m = _model()
    data = weights_bytes(m)
    torch.manual_seed(1)
    other = WorldModel(WorldModelConfig())
    load_weights_bytes(other, data)
    for (k, a), b in zip(m.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
    small = _model(latent_dim=32)
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.raises(ValueError, match="tensor '"):
        load_weights_bytes(small, data)
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_weights_bytes(small, b"not a checkpoint")


def test_model_value_fn_bootstraps_from_the_model():
    from pzstream.model.inference import model_value_fn
    from pzstream.model.targets import build_windows
    from wm_helpers import make_segment

    m = _model(td_steps=2, discount=0.5)
    seg = make_segment([1.0, 0.0, 0.0, 0.0])
    fn = model_value_fn(m, chunk=3)
    windows = build_windows([seg], m.cfg, value_fn=fn)
    ep = windows[0].episode
    boot = fn(ep)
    assert boot.shape == (4,) and np.isfinite(boot).all() and np.ptp(boot) > 0
    assert ep.value_target[0] == pytest.approx(1.0 + 0.25 * boot[2], abs=1e-5)


def test_the_node_store_grows_and_reuse_after_reset_matches_a_fresh_adapter():
    """Many roots and steps outgrow the first store (it doubles); after reset the old contents stay
    in the tensors but are masked: a reused adapter answers exactly as a new one."""
    m = _model(context_steps=1, unroll_steps=2)
    hist, obs, cands = HIST * 12, OBS * 12, CANDS * 12   # 36 roots
    acts = [np.array([(i + s) % len(cands[i]) for i in range(36)]) for s in range(4)]

    def play(ad: SearchAdapter):
        out = ad.root(hist, obs, cands)
        h, recs = out.handle, []
        for a in acts:
            rec = ad.recurrent(h, a)
            h = rec.handle
            recs.append(rec)
        return out, recs

    used = SearchAdapter(m)
    play(used)
    assert used._cap > 64  # 36 roots x 5 nodes (+ rebuilt ones) outgrew the first store
    used.reset()
    out, recs = play(used)
    ref_out, ref_recs = play(SearchAdapter(m))
    np.testing.assert_allclose(out.value, ref_out.value, atol=1e-6)
    for rec, ref in zip(recs, ref_recs):
        np.testing.assert_allclose(rec.value, ref.value, atol=1e-6)
        np.testing.assert_allclose(rec.reward, ref.reward, atol=1e-6)
        np.testing.assert_allclose(rec.prior_logits, ref.prior_logits, atol=1e-5)


def test_block_extend_writes_the_store_in_place_and_equals_forward_on_the_concatenated_cache():
    """The search's recurrent pass (Block.extend) attends to its keys where they sit in the node store:
    the same output as the training path's forward over the parent's cache plus the new token."""
    m = _model()
    block, cfg = m.blocks[0], m.cfg
    b, t, heads, dh = 3, 8, cfg.n_heads, cfg.latent_dim // cfg.n_heads
    torch.manual_seed(1)
    lens = torch.tensor([2, 5, 3])
    past_k, past_v = torch.randn(b, heads, 5, dh), torch.randn(b, heads, 5, dh)
    valid = torch.arange(5)[None] < lens[:, None]
    x = torch.randn(b, 1, cfg.latent_dim)
    with torch.no_grad():
        ref, (k_ref, v_ref) = block(x, torch.cat([valid, torch.ones(b, 1, dtype=torch.bool)], 1)[:, None], (past_k, past_v))
        ks, vs = torch.zeros(b, heads, t, dh), torch.zeros(b, heads, t, dh)
        ks[:, :, :5], vs[:, :, :5] = past_k, past_v
        store_valid = torch.cat([valid, torch.zeros(b, 1, dtype=torch.bool)], 1)
        store_valid[torch.arange(b), lens] = True  # the new token sits at each row's length
        out = block.extend(x, store_valid, ks, vs, torch.arange(b), lens)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    rows = torch.arange(b)
    torch.testing.assert_close(ks[rows, :, lens], k_ref[:, :, 5])  # the new key and value at each row's length
    torch.testing.assert_close(vs[rows, :, lens], v_ref[:, :, 5])
    written = torch.arange(t)[None] < 5
    written = written | (torch.arange(t)[None] == lens[:, None])
    assert (ks.abs().sum((1, 3))[~written] == 0).all() and (vs.abs().sum((1, 3))[~written] == 0).all()


def test_step_buckets_pad_by_repeating_the_first_parent():
    from pzstream.model.graphs import bucket, padded_inputs

    assert [bucket(b) for b in (1, 2, 3, 4, 5, 100, 128, 129)] == [1, 2, 4, 4, 8, 128, 128, 256]
    with pytest.raises(ValueError):
        bucket(0)
    got = padded_inputs(np.array([7, 8, 9]), np.array([0, 1, 2]), np.array([5, 5, 7]), np.array([20, 21, 22]), 4)
    assert got.tolist() == [[7, 8, 9, 7], [0, 1, 2, 0], [5, 5, 7, 5], [20, 21, 22, 20]]
    with pytest.raises(ValueError, match="do not fit"):
        padded_inputs(np.arange(5), np.arange(5), np.arange(5), np.arange(5), 4)


def _play_steps(ad: SearchAdapter, depth: int):
    """Recurrent outputs and every new node's (tokens, valid) over ``depth`` steps of 3 parents."""
    h, outs, nodes = ad.root(HIST, OBS, CANDS).handle, [], []
    for step in range(depth):
        rec = ad.recurrent(h, np.array([step % 3, step % 2, 0]))
        h = rec.handle
        outs.append(rec)
        nodes.append([tuple(t.clone() for t in ad.node_tokens(int(x))) for x in h])
    return outs, nodes


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device"))])
def test_the_graphed_step_gives_the_plain_steps_values_and_nodes(device):
    """search.cuda_graphs: the padded, static-shape step (captured and replayed on CUDA; run eagerly on a
    CPU) gives the plain step's rewards, values and prior logits and writes the same nodes, through
    cache rebuilds (6 steps outgrow max_tokens) and a store that grows past its first 64 nodes (new
    tensors: the graphs are dropped and captured again)."""
    from pzstream.model.graphs import StepGraphs

    m = _model(context_steps=1, unroll_steps=2).to(device)
    plain, graphed = SearchAdapter(m, device), SearchAdapter(m, device, graphs=True)
    if device == "cpu":  # search.cuda_graphs does nothing without CUDA: run the graphs' padded step eagerly
        assert graphed.graphs is None
        graphed.graphs = StepGraphs(graphed, capture=False)
    (ref, ref_nodes), (got, got_nodes) = _play_steps(plain, 24), _play_steps(graphed, 24)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a.handle, b.handle)
        for name in ("reward", "value", "prior_logits"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-4, atol=1e-4, err_msg=name)  # values: h^-1 amplifies float32 noise
    for row_a, row_b in zip(ref_nodes, got_nodes):
        for (ta, va), (tb, vb) in zip(row_a, row_b):
            assert torch.equal(va, vb)
            torch.testing.assert_close(tb, ta, rtol=1e-5, atol=1e-5)
    assert graphed.graphs.failed is None and graphed._cap > 64
    if device == "cuda":
        assert graphed.graphs.captures >= 1
    # more parents than before (a bigger bucket) after a reset: the store is reused
    graphed.reset()
    h = graphed.root(HIST * 3, OBS * 3, CANDS * 3).handle
    rec = graphed.recurrent(h, np.zeros(9, dtype=np.int64))
    plain.reset()
    ref9 = plain.recurrent(plain.root(HIST * 3, OBS * 3, CANDS * 3).handle, np.zeros(9, dtype=np.int64))
    np.testing.assert_allclose(rec.value, ref9.value, rtol=1e-5, atol=1e-5)
