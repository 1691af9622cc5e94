"""Would reusing a game's prompt keys and values from one move to the next pay? Prompt tokens shared
between consecutive moves of the same game, against those every prompt shares (the template head that
``pzstream.llm.prefix.PrefixCache`` already computes once).

    python bench/prompt_reuse.py [--quick] [--games zork1,detective,...] [--moves 60] [key=value ...]

Each game's Jericho walkthrough is replayed from reset for ``--moves`` moves; at every move the scoring
prompt is built as the prior builds it (``prompts.scoring_prompts`` with the config's ``llm`` section:
prompt format, history length, token limit, the model's chat template) and tokenised as the scorer
tokenises it (``tokens.encode_roots``). Per game and over all moves:

- ``prompt_tokens``: mean prompt length;
- ``head_share``: the share of a prompt's tokens in the prefix common to every prompt of every game
  (what the shared prefix cache saves today);
- ``previous_share``: the share in the prefix it has in common with the same game's previous prompt
  (what a per-game cache could save at best, the head included);
- ``extra_share`` = previous - head: what reuse across a game's moves would add.

Needs the Jericho suite (``env.games_dir``, default ``../shared/games/jericho``) and no model weights (the
tokenizer of ``llm.model`` only; the default is the packaged SmolLM2's). ``--quick``: two games, 30 moves.
The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pzstream.llm.prefix import common_prefix_len  # noqa: E402

DEFAULT_GAMES = ("zork1", "zork3", "planetfall", "plundered", "detective", "905", "reverb", "night")  # prior_quality.py's
DEFAULT_SETTINGS = ("llm.model=smollm2-135m-instruct", "llm.prompt_format=orz", "llm.list_candidates=false")


def game_prompts(name: str, moves: int, cfg) -> list[list[int]]:
    """Prompt ids of the first ``moves`` moves along ``name``'s walkthrough (fewer where the game ends)."""
    from transformers import AutoTokenizer

    from pzstream.env import open_game
    from pzstream.llm.factory import prompt_config
    from pzstream.llm.prompts import scoring_prompts
    from pzstream.llm.tiny import resolve_model
    from pzstream.llm.tokens import encode_roots

    tok = AutoTokenizer.from_pretrained(resolve_model(cfg.llm.model))
    pc = prompt_config(cfg.llm)
    game = open_game(name, games_dir=cfg.env.games_dir, cache_dir=cfg.env.cache_dir)
    try:
        walk = game.walkthrough()
        if not walk:
            raise SystemExit(f"{name}: Jericho has no walkthrough for this game")
        obs, history, out = game.reset(), [], []
        for action in walk[:moves]:
            prompt = scoring_prompts(tok, pc, [history], [obs], [[action]], cfg.llm.list_candidates)[0]
            out.append(encode_roots(tok, [prompt], [[action]])[0][0])
            res = game.step(action)
            history.append((obs, action, float(res.reward)))
            obs = res.observation
            if res.done:
                break
    finally:
        game.close()
    return out


def shares(prompts: list[list[int]], head: int) -> dict[str, float]:
    """Mean prompt length, and the head's and the previous prompt's mean shares of it (from move 2 on)."""
    rows = [(len(b), min(head, len(b) - 1), min(common_prefix_len(a, b), len(b) - 1))
            for a, b in zip(prompts, prompts[1:])]
    n = max(1, len(rows))
    mean_len = sum(r[0] for r in rows) / n
    head_share = sum(r[1] / r[0] for r in rows) / n
    prev_share = sum(r[2] / r[0] for r in rows) / n
    return dict(moves=len(prompts), prompt_tokens=mean_len, head_share=head_share, previous_share=prev_share,
                extra_share=prev_share - head_share)


def main() -> None:
    from pzstream.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="zork1 and detective, 30 moves")
    ap.add_argument("--games", default=None, help="comma-separated Jericho games (default 8)")
    ap.add_argument("--moves", type=int, default=None, help="moves along each walkthrough (default 60)")
    ap.add_argument("overrides", nargs="*", help="config overrides (the llm section's prompt settings)")
    args = ap.parse_args()
    games = args.games.split(",") if args.games else (["zork1", "detective"] if args.quick else list(DEFAULT_GAMES))
    moves = args.moves or (30 if args.quick else 60)
    if moves < 2:
        raise SystemExit("--moves: at least 2 (shares are between consecutive moves)")
    cfg = load_config(None, [*DEFAULT_SETTINGS, *args.overrides])

    per_game = {}
    for g in games:
        per_game[g] = game_prompts(g, moves, cfg)
        print(f"[prompt_reuse] {g}: {len(per_game[g])} prompts", file=sys.stderr, flush=True)
    everyone = [p for ps in per_game.values() for p in ps]
    head = min(common_prefix_len(everyone[0], p) for p in everyone)
    rows = {g: shares(ps, head) for g, ps in per_game.items()}
    n = len(rows)
    mean = {k: sum(r[k] for r in rows.values()) / n for k in ("prompt_tokens", "head_share", "previous_share", "extra_share")}

    print(f"{'game':<12} {'moves':>6} {'prompt tok':>11} {'head':>7} {'previous':>9} {'extra':>7}")
    for g, r in {**rows, "mean": {"moves": sum(r["moves"] for r in rows.values()), **mean}}.items():
        print(f"{g:<12} {r['moves']:>6} {r['prompt_tokens']:>11.1f} {r['head_share']:>7.1%} "
              f"{r['previous_share']:>9.1%} {r['extra_share']:>7.1%}")
    print(json.dumps(dict(bench="prompt_reuse", games=games, moves=moves, model=cfg.llm.model,
                          prompt_format=cfg.llm.prompt_format, history_len=cfg.llm.history_len,
                          max_prompt_tokens=cfg.llm.max_prompt_tokens, head_tokens=head, per_game=rows, **mean,
                          python=platform.python_version())))


if __name__ == "__main__":
    main()
