"""Fixed prompt sets from real games, for benchmarks and tests of PPO episodes.

``walkthrough_samples`` plays a game's walkthrough and makes one ``PromptSample`` per state:
the ground truth is the walkthrough's action, the candidates are the game's valid actions at
that state (capped to ``max_candidates``, always including the truth, shuffled with a fixed
seed), so uniform guessing earns exact-match reward 1/K.
"""
from __future__ import annotations

import random

from pzstream.orz.samples import PromptSample


def walkthrough_samples(game: str = "default", max_candidates: int = 8, seed: int = 0, limit: int | None = None,
                        games_dir: str | None = None, reset_seed: int = 0) -> list[PromptSample]:
    from pzstream.env import open_game

    g = open_game(game, games_dir=games_dir)
    try:
        obs = g.reset(seed=reset_seed)
        walk = g.walkthrough()
        rng = random.Random(seed)
        out, history, prefix = [], [], []
        for step, action in enumerate(walk[:limit] if limit else walk):
            valid = g.valid_actions()
            others = [a for a in valid if a != action]
            rng.shuffle(others)
            cands = others[:max(0, max_candidates - 1)] + [action]
            rng.shuffle(cands)
            out.append(PromptSample(game=g.name, observation=obs, candidates=cands, truth=action,
                                    history=list(history[-3:]), visits=[float(c == action) for c in cands],
                                    reward=0.0, collector_id="walkthrough", episode_id=0, step=step, seed=reset_seed,
                                    prefix=list(prefix), wm_version=0, llm_version=0))
            res = g.step(action)
            history.append((obs, action, float(res.reward)))
            prefix.append(action)
            obs = res.observation
            if res.done:
                break
        return out
    finally:
        g.close()


def chance_of(samples: list[PromptSample]) -> float:
    """Expected exact-match reward of a uniform guess among each sample's candidates."""
    return sum(1.0 / len(s.candidates) for s in samples) / len(samples)
