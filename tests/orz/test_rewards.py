"""Text rewards of an ORZ episode: parsing, format, exact and fuzzy match, composition."""
from __future__ import annotations

import random

import pytest

from pzstream.orz.rewards import (DEFAULT_MAX_CHARS, MALFORMED_REWARD, REWARD_NAMES, STATUSES, Answer,
                                  RewardSpec, combine, commands_equivalent, exact_match_reward, format_reward,
                                  fuzzy_match_reward, normalize_command, parse_answer, parse_reward_specs,
                                  text_rewards)

GOOD = "the door is locked, the key is in the trunk</think>\n<answer>Open the antique trunk</answer>"

# response -> (status, format reward); every malformed one earns MALFORMED_REWARD everywhere
CASES = {
    GOOD: ("ok", 1.0),
    "no answer here</think>\nopen trunk": ("missing", 0.0),
    "thinking</think>\n<answer>open trunk": ("missing", 0.0),                       # unclosed answer
    "thinking</think>\nopen trunk</answer>": ("missing", 0.0),                      # no opening tag
    "</think><answer>go north</answer><answer>go south</answer>": ("multiple", 0.0),
    "</think><answer>go <answer>north</answer></answer>": ("multiple", 0.0),       # nested
    "</think><answer>go north</answer> <answer>": ("multiple", 0.0),               # stray extra tag
    "</think><answer>   \n </answer>": ("empty", 0.0),
    "</think><answer></answer>": ("empty", 0.0),
    "x" * DEFAULT_MAX_CHARS + "</think><answer>go north</answer>": ("too_long", 0.0),
    "<answer>go north</answer> and then I think</think>": ("ok", 0.0),             # answer before think closes
    "no think close <answer>go north</answer>": ("ok", 0.0),
    "<answer>go</think>north</answer>": ("ok", 0.0),                               # think closes inside the answer
    "a</think> b</think><answer>go north</answer>": ("ok", 0.0),                   # two think closes
    "hmm</think><answer>go north</answer> trailing words": ("ok", 0.0),
    "hmm</think>  <answer> go north </answer>\n\n ": ("ok", 1.0),
}


@pytest.mark.parametrize("response", list(CASES))
def test_status_and_rewards_of_hand_made_responses(response):
    status, fmt = CASES[response]
    answer = parse_answer(response)
    assert answer.status == status
    assert (answer.text is None) == (status != "ok")
    assert format_reward(response) == fmt
    if status != "ok":
        assert exact_match_reward(response, "go north") == MALFORMED_REWARD == 0.0
        assert fuzzy_match_reward(response, "go north") == MALFORMED_REWARD
        assert text_rewards(response, "go north") == {"exact": 0.0, "fuzzy": 0.0, "format": 0.0}


def test_answer_is_stripped_and_only_the_answer():
    assert parse_answer(GOOD) == Answer("Open the antique trunk", "ok")
    assert parse_answer("</think><answer>\n  look \n</answer>").text == "look"


def test_length_cap_counts_the_whole_response():
    response = "</think><answer>look</answer>"
    assert parse_answer(response, max_chars=len(response)).status == "ok"
    assert parse_answer(response, max_chars=len(response) - 1).status == "too_long"
    assert format_reward(response, max_chars=len(response) - 1) == 0.0


def test_exact_match_ignores_only_case_and_outer_whitespace():
    assert exact_match_reward(GOOD, "  open the ANTIQUE trunk ") == 1.0
    assert exact_match_reward(GOOD, "open antique trunk") == 0.0
    assert exact_match_reward("</think><answer>go north</answer>", "north") == 0.0


def test_fuzzy_match_accepts_equivalent_commands():
    assert fuzzy_match_reward(GOOD, "open antique trunk") == 1.0
    assert fuzzy_match_reward("</think><answer>n</answer>", "go north") == 1.0
    assert fuzzy_match_reward("</think><answer>give troll the sword</answer>", "give sword to troll") == 1.0
    assert fuzzy_match_reward("</think><answer>go south</answer>", "go north") == 0.0
    assert text_rewards("</think><answer>N.</answer>", "go north") == {"exact": 0.0, "fuzzy": 1.0, "format": 1.0}


@pytest.mark.parametrize("a, b", [
    ("n", "north"), ("go n", "north"), ("walk north", "n"), ("u", "go up"), ("SW", "southwest"),
    ("get lamp", "take the lamp"), ("pick up the lamp", "take lamp"), ("grab a lamp", "Take Lamp!"),
    ("l", "look"), ("x mailbox", "examine the mailbox"), ("look at mailbox", "examine mailbox"),
    ("i", "inventory"), ("inv", "inventory"), ("z", "wait"),
    ("get old key from antique trunk", "take old key from the antique trunk"),
    ("give sword to troll", "give troll sword"), ("give troll the sword", "give the sword to the troll"),
    ("show rusty key to old man", "show old man rusty key"), ("throw axe to dwarf", "throw dwarf axe"),
    ("open bob's box", "open bobs box"),
])
def test_equivalent_commands(a, b):
    assert commands_equivalent(a, b) and commands_equivalent(b, a)


@pytest.mark.parametrize("a, b", [
    ("put key in box", "put box in key"), ("put key on table", "put table key"), ("go north", "go south"),
    ("take lamp", "drop lamp"), ("give sword to troll", "give sword troll"), ("throw axe at dwarf", "throw dwarf axe"),
    ("take n", "take north"), ("q", "quit"), ("the", "a"), ("", ""),
])
def test_different_commands(a, b):
    assert not commands_equivalent(a, b) and not commands_equivalent(b, a)


def test_normalize_command():
    assert normalize_command("  Pick up   the Lamp! ") == "take lamp"
    assert normalize_command("go n") == "north"
    assert normalize_command("take n") == "take n"  # an object named "n" stays
    assert normalize_command("x the mailbox.") == "examine mailbox"


def test_never_raises_on_garbage():
    rng = random.Random(1234)
    pieces = ["<answer>", "</answer>", "<think>", "</think>", "<answer", "answer>", "</", "<", ">", " ", "\n",
              "go north", "n", "the", "é", "\u200b", "\ud800", "🙂", "\x00", "give x to y", "to", "'", "..."]
    for _ in range(500):
        response = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.3:
            response += "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 20)))
        for max_chars in (DEFAULT_MAX_CHARS, 20):
            answer = parse_answer(response, max_chars)
            assert answer.status in STATUSES and (answer.text is None) == (answer.status != "ok")
            rewards = text_rewards(response, "go north", max_chars)
            assert set(rewards) == {"exact", "fuzzy", "format"}
            assert all(v in (0.0, 1.0) for v in rewards.values())
            commands_equivalent(response, "give x to y")


def test_combine_is_the_weighted_sum():
    components = {"exact": 1.0, "fuzzy": 1.0, "format": 0.0, "progress": 2.0}
    specs = [RewardSpec("exact", 1.0), RewardSpec("format", 0.1), RewardSpec("progress", 0.5)]
    assert combine(components, specs) == pytest.approx(2.0)
    assert combine(components, []) == 0.0
    with pytest.raises(ValueError, match="'bogus'"):
        combine(components, [RewardSpec("bogus", 1.0)])
    with pytest.raises(ValueError, match="'bogus'"):
        combine({**components, "bogus": 1.0}, specs)
    with pytest.raises(ValueError, match="'progress' is weighted but was not computed"):
        combine(text_rewards(GOOD, "open antique trunk"), specs)


def test_parse_reward_specs_forms():
    assert parse_reward_specs("exact") == [RewardSpec("exact", 1.0)]
    assert parse_reward_specs(" exact : 1.0 , format:0.1") == [RewardSpec("exact", 1.0), RewardSpec("format", 0.1)]
    assert parse_reward_specs(["exact:2", "format:0.1,progress:-0.5"]) == [
        RewardSpec("exact", 2.0), RewardSpec("format", 0.1), RewardSpec("progress", -0.5)]
    assert parse_reward_specs([("fuzzy", 1), ("format", 0.25)]) == [
        RewardSpec("fuzzy", 1.0), RewardSpec("format", 0.25)]
    assert parse_reward_specs(("progress", 3)) == [RewardSpec("progress", 3.0)]
    assert parse_reward_specs([RewardSpec("exact", 0.5)]) == [RewardSpec("exact", 0.5)]
    assert [s.name for s in parse_reward_specs(",".join(REWARD_NAMES))] == list(REWARD_NAMES)


@pytest.mark.parametrize("spec, message", [
    ("", "names no reward"), (" , ", "names no reward"), ([], "names no reward"),
    ("exactly", "unknown reward 'exactly'"), ("exact:1,score:1", "unknown reward 'score'"),
    ([("bogus", 1.0)], "unknown reward 'bogus'"),
    ("exact:abc", "weight 'abc' is not a number"), ("exact:", "no weight"), ("exact:nan", "not finite"),
    ("exact:inf", "not finite"), ([("exact", None)], "not a number"), ([("exact", True)], "not a number"),
    ("exact,exact:2", "given 2 times"), ([3.0], "neither"), (None, "neither a string nor a sequence"),
])
def test_parse_reward_specs_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_reward_specs(spec)
