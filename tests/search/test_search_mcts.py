"""Tests of pzstream.search: backend agreement, masking, noise, prior override, policy."""
from __future__ import annotations

import numpy as np
import pytest

from pzstream.search import (
    RecurrentFnOutput,
    RootFnOutput,
    SearchConfig,
    lightzero_available,
    mix_root_prior,
    run_search,
)

HAVE_LZ = lightzero_available()
needs_lz = pytest.mark.skipif(not HAVE_LZ, reason="lightzero's compiled ctree (lzero/mcts/ctree/ctree_muzero/mz_tree) is not installed/loadable")
BACKENDS = ["numpy", pytest.param("lightzero", marks=needs_lz)]
_M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrap-around arithmetic)."""
    x = x.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _M2
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def hash_model(num_slots: int, reward_scale: float = 1.0, calls: list | None = None):
    """Deterministic fake model: everything about a child is a hash of (parent handle, action)."""

    def recurrent_fn(parent: np.ndarray, action: np.ndarray) -> RecurrentFnOutput:
        if calls is not None:
            calls.append((parent.copy(), action.copy()))
        h = _mix(parent.astype(np.uint64) * _M1 + action.astype(np.uint64) + np.uint64(1))
        k = np.arange(num_slots, dtype=np.uint64)
        logits = (_unit(_mix(h[:, None] * _M2 + k[None, :])) * 4.0 - 2.0).astype(np.float32)
        return RecurrentFnOutput(
            reward=((_unit(_mix(h + np.uint64(11))) * 2 - 1) * reward_scale).astype(np.float32),
            value=(_unit(_mix(h + np.uint64(22))) * 2 - 1).astype(np.float32),
            prior_logits=logits,
            handle=(h >> np.uint64(2)).astype(np.int64),
        )

    return recurrent_fn


def make_root(rng: np.random.Generator, num_roots: int, num_slots: int, illegal_frac: float = 0.3):
    legal = rng.random((num_roots, num_slots)) >= illegal_frac
    legal[np.arange(num_roots), rng.integers(0, num_slots, num_roots)] = True
    root = RootFnOutput(
        prior_logits=rng.normal(size=(num_roots, num_slots)).astype(np.float32),
        value=rng.normal(size=num_roots).astype(np.float32),
        handle=np.arange(num_roots, dtype=np.int64) + 1000,
    )
    return root, legal


@needs_lz
@pytest.mark.parametrize("num_roots", [1, 4, 8])
@pytest.mark.parametrize("variant", ["noise", "no_noise", "root_prior", "tiny_rewards"])
def test_backends_agree(num_roots: int, variant: str) -> None:
    rng = np.random.default_rng(num_roots * 7 + len(variant))
    num_slots = 12
    root, legal = make_root(rng, num_roots, num_slots)
    prior = None
    if variant == "root_prior":
        prior = mix_root_prior(rng.random((num_roots, num_slots)), rng.random((num_roots, num_slots)), 0.3, legal)
    noise = 0.0 if variant == "no_noise" else 0.25
    scale = 0.0 if variant == "tiny_rewards" else 1.0  # all-zero rewards: many exact ties
    outs = {}
    for backend in ("numpy", "lightzero"):
        cfg = SearchConfig(num_simulations=40, root_noise_fraction=noise, backend=backend)
        outs[backend] = run_search(root, hash_model(num_slots, scale), legal, cfg, np.random.default_rng(5), root_prior=prior)
    a, b = outs["numpy"], outs["lightzero"]
    np.testing.assert_array_equal(a.visit_counts, b.visit_counts)
    np.testing.assert_array_equal(a.action, b.action)  # same rng state after the same draws
    np.testing.assert_allclose(a.root_value, b.root_value, atol=1e-4)
    np.testing.assert_allclose(a.q_values, b.q_values, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_visits_sum_and_illegal_never_visited(backend: str) -> None:
    rng = np.random.default_rng(0)
    root, legal = make_root(rng, 8, 16, illegal_frac=0.5)
    calls: list = []
    cfg = SearchConfig(num_simulations=30, backend=backend)
    out = run_search(root, hash_model(16, calls=calls), legal, cfg, np.random.default_rng(1))
    assert out.visit_counts.dtype == np.int32 and out.visit_counts.shape == (8, 16)
    np.testing.assert_array_equal(out.visit_counts.sum(axis=1), 30)
    assert not out.visit_counts[~legal].any()
    assert not out.visit_probs[~legal].any()
    np.testing.assert_allclose(out.visit_probs.sum(axis=1), 1.0, rtol=1e-6)
    assert legal[np.arange(8), out.action].all()
    # The root's candidate set applies at every depth of its tree, and each call
    # expands one child per root.
    assert len(calls) == 30
    for _, actions in calls:
        assert actions.shape == (8,) and legal[np.arange(8), actions].all()


def test_recurrent_fn_gets_known_handles() -> None:
    rng = np.random.default_rng(3)
    root, legal = make_root(rng, 4, 6)
    calls: list = []
    model = hash_model(6, calls=calls)
    run_search(root, model, legal, SearchConfig(num_simulations=20), rng)
    known = [set(root.handle[b:b + 1].tolist()) for b in range(4)]
    replay = hash_model(6)  # same (deterministic) model, without recording calls
    for parents, actions in calls:
        out = replay(parents, actions)
        for b in range(4):
            assert parents[b] in known[b]  # only the root or a child handed out earlier
            known[b].add(int(out.handle[b]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_temperature_zero_picks_argmax(backend: str) -> None:
    rng = np.random.default_rng(2)
    root, legal = make_root(rng, 8, 10)
    out = run_search(root, hash_model(10), legal, SearchConfig(num_simulations=25, temperature=0.0, backend=backend), rng)
    np.testing.assert_array_equal(out.action, np.argmax(out.visit_counts, axis=1))


def test_temperature_sampling_is_deterministic_and_on_visited() -> None:
    rng = np.random.default_rng(4)
    root, legal = make_root(rng, 16, 10)
    cfg = SearchConfig(num_simulations=25, temperature=1.0)
    a = run_search(root, hash_model(10), legal, cfg, np.random.default_rng(9))
    b = run_search(root, hash_model(10), legal, cfg, np.random.default_rng(9))
    np.testing.assert_array_equal(a.action, b.action)
    np.testing.assert_array_equal(a.visit_counts, b.visit_counts)
    assert (a.visit_counts[np.arange(16), a.action] > 0).all()


def bandit_model(num_slots: int, good: int):
    def recurrent_fn(parent: np.ndarray, action: np.ndarray) -> RecurrentFnOutput:
        n = parent.shape[0]
        return RecurrentFnOutput(
            reward=(action == good).astype(np.float32),
            value=np.zeros(n, np.float32),
            prior_logits=np.zeros((n, num_slots), np.float32),
            handle=parent * 100 + action + 1,
        )

    return recurrent_fn


@pytest.mark.parametrize("backend", BACKENDS)
def test_bandit_concentrates_on_rewarding_action(backend: str) -> None:
    num_slots, good = 6, 4
    root = RootFnOutput(np.zeros((2, num_slots), np.float32), np.zeros(2, np.float32), np.array([1, 2]))
    legal = np.ones((2, num_slots), bool)
    cfg = SearchConfig(num_simulations=50, root_noise_fraction=0.0, temperature=0.0, backend=backend)
    out = run_search(root, bandit_model(num_slots, good), legal, cfg, np.random.default_rng(0))
    assert (out.visit_counts[:, good] >= 0.6 * 50).all(), out.visit_counts
    np.testing.assert_array_equal(out.action, good)
    # Every step of the imagined tree pays 1 for `good`, so its Q is at least 1 and
    # beats every other child's (reward 0 first, then at best the same future).
    others = np.delete(out.q_values, good, axis=1)
    assert (out.q_values[:, good] >= 1.0).all() and (out.q_values[:, good][:, None] > others).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_dirichlet_noise_changes_visits_but_not_onto_illegal(backend: str) -> None:
    rng = np.random.default_rng(6)
    root, legal = make_root(rng, 8, 12, illegal_frac=0.4)
    quiet = SearchConfig(num_simulations=30, root_noise_fraction=0.0, backend=backend)
    noisy = SearchConfig(num_simulations=30, root_noise_fraction=0.5, backend=backend)
    base = run_search(root, hash_model(12), legal, quiet, np.random.default_rng(1)).visit_counts
    changed = False
    for seed in range(3):
        v = run_search(root, hash_model(12), legal, noisy, np.random.default_rng(seed)).visit_counts
        assert not v[~legal].any()
        changed |= not np.array_equal(v, base)
    assert changed
    # Same rng, same noise, same result.
    a = run_search(root, hash_model(12), legal, noisy, np.random.default_rng(7)).visit_counts
    b = run_search(root, hash_model(12), legal, noisy, np.random.default_rng(7)).visit_counts
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_root_prior_override_is_used(backend: str) -> None:
    num_slots, target = 8, 5
    n = 3
    flat = np.zeros((n, num_slots), np.float32)
    root = RootFnOutput(prior_logits=flat, value=np.zeros(n, np.float32), handle=np.arange(n))
    legal = np.ones((n, num_slots), bool)

    def zero_model(parent, action):
        m = parent.shape[0]
        return RecurrentFnOutput(np.zeros(m, np.float32), np.zeros(m, np.float32), np.zeros((m, num_slots), np.float32), parent * 10 + action + 1)

    one_hot = np.zeros((n, num_slots), np.float32)
    one_hot[:, target] = 1.0
    cfg = SearchConfig(num_simulations=20, root_noise_fraction=0.0, backend=backend)
    out = run_search(root, zero_model, legal, cfg, np.random.default_rng(0), root_prior=one_hot)
    # The first descent sees a zero exploration term everywhere (ties -> slot 0); every
    # later one follows the prior.
    assert (out.visit_counts[:, target] >= 19).all(), out.visit_counts
    without = run_search(root, zero_model, legal, cfg, np.random.default_rng(0))
    assert (without.visit_counts[:, target] < 19).all()


def test_mix_root_prior_math() -> None:
    wm = np.array([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    llm = np.array([[0.0, 0.0, 1.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    legal = np.array([[True, True, True, False], [True, True, False, True]])
    out = mix_root_prior(wm, llm, np.array([0.5, 0.0]), legal)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.25, 0.25, 0.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out[1], np.array([0.1, 0.2, 0.0, 0.4]) / 0.7, rtol=1e-6)
    # Scalar weight equals a per-root array of that weight; w=1 gives the (renormalised) LLM prior.
    np.testing.assert_allclose(mix_root_prior(wm, llm, 0.3, legal), mix_root_prior(wm, llm, np.full(2, 0.3), legal))
    np.testing.assert_allclose(mix_root_prior(wm, llm, 1.0, legal)[1], [1 / 3, 1 / 3, 0, 1 / 3], rtol=1e-6)
    # No legal mass at all -> uniform over legal.
    np.testing.assert_allclose(mix_root_prior(np.array([[0, 0, 1.0]]), np.array([[0, 0, 1.0]]), 0.5, np.array([[True, True, False]])), [[0.5, 0.5, 0]])
    with pytest.raises(ValueError):
        mix_root_prior(wm, llm, np.array([0.5, 1.5]), legal)


def test_input_validation_and_unavailable_backend(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    root, legal = make_root(rng, 2, 4)
    bad = legal.copy()
    bad[0] = False
    with pytest.raises(ValueError, match="legal"):
        run_search(root, hash_model(4), bad, SearchConfig(), rng)
    with pytest.raises(ValueError):
        SearchConfig(backend="jax")
    import pzstream.search.lightzero_tree as lt

    def broken():
        raise ImportError("LightZero ctree backend unavailable: package 'lzero' (lightzero) is not installed")

    monkeypatch.setattr(lt, "_load", broken)
    assert lt.lightzero_available() is False
    with pytest.raises(RuntimeError, match="lightzero"):
        run_search(root, hash_model(4), legal, SearchConfig(backend="lightzero"), rng)
