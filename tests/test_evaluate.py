"""Evaluation (``--role eval``): a weights directory that does not exist is an error, the output names
the LLM and has a random baseline, two calls with the same weights and seed play the same moves, and
the table keeps its columns apart."""
from __future__ import annotations

import json
import os
import re

import pytest

from pzstream.roles.evaluate import MODES, format_table
from support import launch

FAST = ["collector.segment_steps=5", "search.num_simulations=2", "llm.max_prompt_tokens=128"]


def test_eval_with_a_weights_directory_that_does_not_exist_fails_with_a_message(tmp_path):
    missing = tmp_path / "no-such-run" / "weights"
    p = launch("--role", "eval", "--episodes", "1", "--weights", str(missing), *FAST)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, err.decode()[-2000:]
    assert "does not exist" in err.decode() and str(missing) in err.decode()
    assert not out.strip()  # no scores of untrained models passed off as the run's


def test_eval_names_the_llm_it_loaded_and_plays_a_random_baseline(tmp_path):
    """Issue 21: the output said only "llm v0", and there was no random mode to compare with."""
    from pzstream.llm.tiny import resolve_model

    p = launch("--role", "eval", "--episodes", "1", "--weights", str(tmp_path), "collector.max_episode_steps=6", *FAST)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err.decode()[-3000:]
    text = out.decode()
    result = json.loads(text.strip().splitlines()[-1])
    directory = resolve_model("tiny")
    assert result["llm"] == {"model": "tiny", "dir": directory}
    assert f"llm: tiny ({directory})" in text and f"llm: tiny ({directory})" in err.decode()  # table and log
    assert list(result["scores"]) == list(MODES) and "random mean" in text
    assert result["plays"]["random"] != result["plays"]["wm"]  # a baseline of its own, not a copy of a mode
    for mode in ("wm_llm", "llm"):  # what the LLM prior did, where it was asked
        counts = result["llm_prior"][mode]["tw-default"]
        assert counts["prior_moves"] == 6 and counts["prior_fallbacks"] == counts["prior_errors"] == 0, counts
        assert f"llm prior in {mode}: 6 moves" in text


@pytest.mark.slow
def test_two_evaluations_with_the_same_weights_and_seed_play_the_same_moves(tmp_path):
    results = []
    for hash_seed in ("1", "2"):  # different string hashing per process, as two shells would have
        p = launch("--role", "eval", "--episodes", "2", "--weights", str(tmp_path), "collector.max_episode_steps=12",
                   *FAST, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    a, b = results
    assert set(a["plays"]) == set(MODES) and all(a["plays"][m] for m in MODES)
    for key in ("scores", "max_scores", "returns", "plays", "llm_prior"):
        assert a[key] == b[key], key


def test_the_eval_table_keeps_every_header_apart():
    result = {"scores": {"random": {"tw-default": 0.5, "a-game-with-a-long-name": 1.0},
                         "wm": {"tw-default": 1.5, "a-game-with-a-long-name": 12.25},
                         "wm_llm": {"tw-default": 0.0, "a-game-with-a-long-name": 350.0},
                         "llm": {"tw-default": 5.0, "a-game-with-a-long-name": 0.0}},
              "max_scores": {"random": {"tw-default": 1, "a-game-with-a-long-name": 5},
                             "wm": {"tw-default": 2, "a-game-with-a-long-name": 20},
                             "wm_llm": {"tw-default": 0, "a-game-with-a-long-name": 350},
                             "llm": {"tw-default": 5, "a-game-with-a-long-name": 0}},
              "episodes": 3, "seed": 1000, "weights": {"wm": 4, "llm": 2, "from": "runs/x/weights"},
              "llm": {"model": "smollm2-135m-instruct", "dir": "/cache/models/smollm2"},
              "llm_prior": {"wm_llm": {g: {"prior_moves": 10.0, "prior_ignored": 5.0, "prior_fallbacks": 1.0,
                                           "prior_errors": 0.0, "prior_shift_mean": 0.02}
                                       for g in ("tw-default", "a-game-with-a-long-name")}, "llm": {}}}
    lines = format_table(result).splitlines()
    header, rows = lines[0], lines[1:3]
    columns = ["game"] + [f"{m} {s}" for m in MODES for s in ("mean", "max")]
    assert re.split(r"\s{2,}", header) == columns
    for row in rows:
        cells = re.split(r"\s{2,}", row)
        assert len(cells) == len(columns), row
        assert len(row) == len(header)  # right-aligned numbers end under their headers
    assert re.split(r"\s{2,}", rows[1]) == ["tw-default", "0.50", "1", "1.50", "2", "0.00", "0", "5.00", "5"]
    assert "world model v4, llm v2" in lines[3]
    assert lines[4] == "llm: smollm2-135m-instruct (/cache/models/smollm2)"
    assert lines[5] == ("llm prior in wm_llm: 20 moves, 10 ignored (50%), 2 fallbacks, 0 errors, mean shift 0.020 "
                        "of the root prior's mass") and len(lines) == 6


def test_eval_refuses_weights_that_fail_their_checksum(tmp_path):
    """A damaged mirror is an error naming the file, not an evaluation of other weights."""
    import pytest

    from pzstream.config import load_config
    from pzstream.model.world_model import untrained_world_model, weights_bytes
    from pzstream.roles.evaluate import load_models
    from pzstream.stream.weights import WeightsError, WeightsStore

    cfg = load_config(None, [])
    WeightsStore(directory=tmp_path).put("wm", 3, weights_bytes(untrained_world_model(cfg.world_model())))
    assert load_models(cfg, tmp_path)[1] == 3
    path = tmp_path / "wm-v3.pt"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="wm-v3.pt"):
        load_models(cfg, tmp_path)
