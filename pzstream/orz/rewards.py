"""Rewards of an ORZ-style PPO episode, computed from the LLM's response text (pure functions).

The prompt ends with ``Assistant: <think>``, so a response starts inside the think block::

    go to the kitchen first</think>
    <answer>go north</answer>

Parsing (``parse_answer``) gives an ``Answer(text, status)``; ``status`` is checked in this order:

    too_long  len(response) > max_chars: generation ran into the length cap, the text is cut
    missing   no complete ``<answer>...</answer>`` pair
    multiple  more than one ``<answer>`` or ``</answer>`` tag (several answers, or nested ones)
    empty     the one answer is whitespace only
    ok        exactly one non-empty answer; ``text`` is it, stripped (None for every other status)

Rewards (each in {0.0, 1.0}; a response whose status is not "ok" earns ``MALFORMED_REWARD``, 0.0):

    exact     1.0 iff the answer equals the ground-truth command after ``strip()`` and case-folding
    fuzzy     1.0 iff ``commands_equivalent(answer, truth)``: equal after ``normalize_command``
              (articles, abbreviations and verb synonyms; tables below), or the same
              give/show/throw command in its other word order ("give sword to troll" ==
              "give troll sword")
    format    1.0 iff well formed: status "ok", exactly one ``</think>``, placed before
              ``<answer>``, and only whitespace after ``</answer>``
    progress  the game's score change for the answer, plus an optional value term
              (``pzstream.orz.progress``, which plays the game); a malformed answer gets
              ``ProgressReward.invalid_penalty``, by default ``DEFAULT_INVALID_PENALTY`` = 0.0

The episode's scalar reward is ``combine(components, specs)``: a weighted sum over the rewards
named in ``specs`` (``parse_reward_specs("exact:1.0,format:0.1")``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pzstream.config import REWARD_NAMES, RewardSpec, parse_reward_specs  # noqa: F401  (the grammar of ppo.rewards)

#: Default cap on a response's length, in characters (past it the answer counts as cut off).
DEFAULT_MAX_CHARS = 512

#: What a response without one well-formed answer earns from exact, fuzzy and format.
MALFORMED_REWARD = 0.0

#: What a malformed answer earns from the progress reward unless configured otherwise.
DEFAULT_INVALID_PENALTY = 0.0

ANSWER_OPEN, ANSWER_CLOSE, THINK_CLOSE = "<answer>", "</answer>", "</think>"
#: One answer block; non-greedy so that two blocks are two matches.
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

STATUSES = ("ok", "missing", "multiple", "empty", "too_long")


@dataclass(frozen=True)
class Answer:
    """The command a response answers with.

    text: the answer, stripped; None unless ``status == "ok"``.
    status: one of ``STATUSES`` (see the module docstring).
    """
    text: str | None
    status: str


def parse_answer(response: str, max_chars: int = DEFAULT_MAX_CHARS) -> Answer:
    """The answer in ``response`` and whether it is usable. Never raises for a str."""
    if len(response) > max_chars:
        return Answer(None, "too_long")
    match = ANSWER_RE.search(response)
    if match is None:
        return Answer(None, "missing")
    if response.count(ANSWER_OPEN) > 1 or response.count(ANSWER_CLOSE) > 1:
        return Answer(None, "multiple")
    text = match.group(1).strip()
    if not text:
        return Answer(None, "empty")
    return Answer(text, "ok")


def format_reward(response: str, max_chars: int = DEFAULT_MAX_CHARS) -> float:
    """1.0 if the response is ``...</think> <answer>X</answer>`` with nothing after, else 0.0."""
    if parse_answer(response, max_chars).status != "ok":
        return MALFORMED_REWARD
    if response.count(THINK_CLOSE) != 1:
        return MALFORMED_REWARD
    if response.index(THINK_CLOSE) > response.index(ANSWER_OPEN):
        return MALFORMED_REWARD
    after = response[response.index(ANSWER_CLOSE) + len(ANSWER_CLOSE):]
    return 1.0 if not after.strip() else MALFORMED_REWARD


# -- command normalisation ------------------------------------------------------------------

#: Words dropped everywhere: the games' parsers ignore them.
ARTICLES = frozenset({"a", "an", "the"})

#: Direction abbreviations, expanded where a direction stands: as the whole command or after
#: a movement verb ("n", "go n"). Elsewhere "n" or "e" may be part of an object's name.
DIRECTIONS = {
    "n": "north", "s": "south", "e": "east", "w": "west",
    "ne": "northeast", "nw": "northwest", "se": "southeast", "sw": "southwest",
    "u": "up", "d": "down",
}

#: Verbs that only say "move": "go north" == "walk north" == "north".
MOVE_VERBS = frozenset({"go", "walk", "run"})

#: Verb synonyms at the start of a command, longest phrase first; the standard Inform and
#: Infocom grammars give each the same action. ("q" stays itself: quitting is no synonym to learn.)
VERB_SYNONYMS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("pick", "up"), "take"),
    (("look", "at"), "examine"),
    (("get",), "take"),
    (("grab",), "take"),
    (("l",), "look"),
    (("x",), "examine"),
    (("i",), "inventory"),
    (("inv",), "inventory"),
    (("z",), "wait"),
)

#: Verbs whose parsers take both "VERB X to Y" and "VERB Y X". Only these are reordered:
#: "put key in box" and "put box in key" are different commands.
DATIVE_VERBS = frozenset({"give", "show", "throw"})

_APOSTROPHES = re.compile(r"['\u2019]")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalize_command(cmd: str) -> str:
    """Canonical form of a command: lowercase, no punctuation or articles, synonyms mapped.

    "Pick up the Lamp!" -> "take lamp"; "go n" -> "north"; "x mailbox" -> "examine mailbox".
    """
    words = _PUNCTUATION.sub(" ", _APOSTROPHES.sub("", cmd.lower())).split()
    words = [w for w in words if w not in ARTICLES]
    for phrase, verb in VERB_SYNONYMS:
        if tuple(words[:len(phrase)]) == phrase:
            words = [verb, *words[len(phrase):]]
            break
    if len(words) == 2 and words[0] in MOVE_VERBS:
        words = words[1:]
    if len(words) == 1:
        words = [DIRECTIONS.get(words[0], words[0])]
    return " ".join(words)


def _dative_form(command: str) -> str:
    """ "give sword to troll" -> "give troll sword" for ``DATIVE_VERBS``; other commands as they are."""
    words = command.split()
    if len(words) < 4 or words[0] not in DATIVE_VERBS or "to" not in words[2:-1]:
        return command
    to = words.index("to", 2)
    return " ".join([words[0], *words[to + 1:], *words[1:to]])


def commands_equivalent(a: str, b: str) -> bool:
    """Whether the games would read ``a`` and ``b`` as the same command.

    Equal after ``normalize_command``, or equal once a ``DATIVE_VERBS`` command's
    "VERB X to Y" is read as "VERB Y X". A command that normalises to nothing ("the", "!")
    matches nothing.
    """
    na, nb = normalize_command(a), normalize_command(b)
    if not na or not nb:
        return False
    return na == nb or _dative_form(na) == _dative_form(nb)


# -- rewards ---------------------------------------------------------------------------------

def exact_match_reward(response: str, truth: str, max_chars: int = DEFAULT_MAX_CHARS) -> float:
    """1.0 iff the answer is ``truth`` up to surrounding whitespace and case."""
    answer = parse_answer(response, max_chars).text
    if answer is None:
        return MALFORMED_REWARD
    return 1.0 if answer.casefold() == truth.strip().casefold() else 0.0


def fuzzy_match_reward(response: str, truth: str, max_chars: int = DEFAULT_MAX_CHARS) -> float:
    """1.0 iff the answer is a command equivalent to ``truth`` (``commands_equivalent``)."""
    answer = parse_answer(response, max_chars).text
    if answer is None:
        return MALFORMED_REWARD
    return 1.0 if commands_equivalent(answer, truth) else 0.0


def text_rewards(response: str, truth: str, max_chars: int = DEFAULT_MAX_CHARS) -> dict[str, float]:
    """The components that need no game: {"exact", "fuzzy", "format"} -> reward."""
    return {"exact": exact_match_reward(response, truth, max_chars),
            "fuzzy": fuzzy_match_reward(response, truth, max_chars),
            "format": format_reward(response, max_chars)}


def combine(components: Mapping[str, float], specs: Sequence[RewardSpec]) -> float:
    """sum(spec.weight * components[spec.name]); components not named in ``specs`` are unused.

    Raises ValueError for a name outside ``REWARD_NAMES`` (in either argument) or a spec
    whose component was not computed.
    """
    for name in [*components, *(s.name for s in specs)]:
        if name not in REWARD_NAMES:
            raise ValueError(f"unknown reward {name!r}; known: {', '.join(REWARD_NAMES)}")
    total = 0.0
    for spec in specs:
        if spec.name not in components:
            raise ValueError(f"reward {spec.name!r} is weighted but was not computed "
                             f"(computed: {', '.join(components) or 'none'})")
        total += spec.weight * components[spec.name]
    return total
