"""Token ids of (prompt, answer): the one encoding that the prior scores and SFT, RFT and PPO train.

Every part that reads or trains the LLM on a candidate action turns text into ids here, so a
gradient always lands on the very token path the MCTS root prior reads:

* the local prior (transformers and vLLM backends, ``prior.py``) and the central prior server;
* built-in SFT / RFT (``train.py``);
* PPO in choice mode (``pzstream.orz``: its prompt is the scoring prompt, its response the answer).

The rule (``encode_pair``):

* ``prompt ids`` = ``lead_ids`` (what the tokenizer itself puts before a text: ``<bos>`` for
  Gemma, nothing for Qwen2 or SmolLM2) and the prompt text tokenised on its own; an empty prompt
  with no lead becomes ``[eos]`` (something must predict the first answer token); a prompt longer
  than a limit keeps its lead and its LAST tokens (``keep_last``), the last step of the one
  truncation rule (``prompts.fit_prompt`` drops history and cuts the observation first). A model
  trained always to see ``<bos>`` first scores noise without it.
* ``answer ids`` = ``continuation.format(action=candidate)`` tokenised on its own, cut to
  ``max_answer_tokens``, then the end of the answer, ``eos``. Tokenising the answer apart from
  the prompt keeps BPE from merging across the boundary (with Qwen2's pre-tokenizer ``>open``
  is one piece of ``<answer>open`` but never of ``open`` alone), so the answer's ids are the same
  after every prompt. The trailing ``eos`` is scored as PriorZero scores ``Action: a<eos>``: an
  answer says that it is complete, so "go" is not a mere prefix of "go north".

Instruct models (``chat_frame``): where the tokenizer has a chat template, prompts are one user
turn of it (``prompts.fit_prompt`` wraps them, and its truncation cuts inside the turn, never the
frame) and the end of every answer is the template's end-of-turn token instead of ``eos``
(``answer_end_id``): the reply then ends as the model was tuned to end its replies.

Tokenised once (``encode_many``, ``TextIds``): every text's ids are kept per tokenizer in a bounded
least-recently-used table, so the prompt that ``prompts.fit_prompt`` measured is not tokenised again
by the scorer (its trials that do not fit, and an observation cut by binary search, stay out of the
table: ``plain_ids``), and the candidate actions a game offers move after move (``north``, ``take lamp``)
are tokenised once per run. Measured on an H100 host's CPU before it: tokenising took 147 ms of the
prior's 471 ms for 128 roots of 512 tokens (bench/prior.py).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

DEFAULT_CONTINUATION = " {action}"
MAX_ANSWER_TOKENS = 32
_SENTINEL = "\u2063PZSTREAM-CONTENT\u2063"  # a text no chat template renders by itself


@dataclass(frozen=True)
class ChatFrame:
    """One user turn of a tokenizer's chat template: ``head + user text + tail`` is the prompt, and
    the model's reply follows ``tail`` (which opens the assistant turn) and ends with ``end_id``.

    ``head``: what the template puts before the user's text (its default system turn, the user
    turn's opening); ``tail``: the user turn's end and the assistant turn's opening (the template's
    generation prompt); ``end_id``: the token the template closes an assistant turn with."""

    head: str
    tail: str
    end_id: int


def _render_frame(tokenizer: Any) -> ChatFrame | None:
    template = getattr(tokenizer, "chat_template", None)
    if not template or not hasattr(tokenizer, "apply_chat_template"):
        return None
    try:
        turn = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False,
                                             add_generation_prompt=True)
        reply = tokenizer.apply_chat_template([{"role": "user", "content": "x"},
                                               {"role": "assistant", "content": _SENTINEL}], tokenize=False)
    except Exception:  # a template that cannot render a plain user turn: score without it
        return None
    if turn.count(_SENTINEL) != 1 or reply.count(_SENTINEL) != 1:
        return None
    head, tail = turn.split(_SENTINEL)
    after = encode_many(tokenizer, [reply.split(_SENTINEL)[1]])[0]
    if not after:
        return None
    return ChatFrame(head=head, tail=tail, end_id=int(after[0]))


def chat_frame(tokenizer: Any) -> ChatFrame | None:
    """The tokenizer's chat frame, or None where it has no chat template (or one that cannot render
    a single user turn): then prompts are plain text and answers end with ``eos``. Setting
    ``tokenizer.chat_template = None`` turns it off for that tokenizer. Cached on the tokenizer."""
    template = getattr(tokenizer, "chat_template", None)
    cached = getattr(tokenizer, "_pzstream_chat_frame", None)
    if cached is not None and cached[0] == template:
        return cached[1]
    frame = _render_frame(tokenizer)
    try:
        tokenizer._pzstream_chat_frame = (template, frame)
    except AttributeError:  # a tokenizer that takes no attributes: computed each time
        pass
    return frame


def answer_end_id(tokenizer: Any) -> int:
    """The token that ends every answer: the chat template's end of turn, else ``eos_id``."""
    frame = chat_frame(tokenizer)
    return frame.end_id if frame is not None else eos_id(tokenizer)


def eos_id(tokenizer: Any) -> int:
    """The token that ends an answer (eos, else pad, else bos, else 0)."""
    for attr in ("eos_token_id", "pad_token_id", "bos_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


def pad_id(tokenizer: Any) -> int:
    v = getattr(tokenizer, "pad_token_id", None)
    return int(v) if v is not None else eos_id(tokenizer)


class TextIds:
    """The ids of texts a tokenizer has encoded (no special tokens), the ``capacity`` most recently
    used kept. Safe across threads (the search server prices and trains in several)."""

    def __init__(self, capacity: int = 8192):
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._ids: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, tokenizer: Any, texts: list[str]) -> list[list[int]]:
        """Each text's ids: from the table, the others in one batched tokenizer call."""
        with self._lock:
            got = [self._ids.get(t) for t in texts]
            for t, g in zip(texts, got):
                if g is not None:
                    self._ids.move_to_end(t)
            todo = list(dict.fromkeys(t for t, g in zip(texts, got) if g is None))
            self.hits += len(texts) - len(todo)
            self.misses += len(todo)
        if todo:
            enc = dict(zip(todo, (tuple(x) for x in plain_ids(tokenizer, todo))))
            self.put(enc)
            got = [g if g is not None else enc[t] for t, g in zip(texts, got)]
        return [list(g) for g in got]  # type: ignore[arg-type]

    def put(self, ids: dict[str, Sequence[int]]) -> None:
        """Keep texts' ids (a caller that tokenised them already), the least recently used going first."""
        with self._lock:
            for t, x in ids.items():
                self._ids[t] = tuple(x)
                self._ids.move_to_end(t)
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()


def plain_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """The tokenizer's ids of each text (no special tokens), through no table: for texts measured and
    thrown away (``prompts.fit_prompt``'s trials)."""
    # verbose=False: texts longer than the model's positions are measured and cut by the callers
    return [list(x) for x in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def text_ids(tokenizer: Any) -> TextIds:
    """The tokenizer's ``TextIds`` table (made on first use and kept on the tokenizer)."""
    table = getattr(tokenizer, "_pzstream_text_ids", None)
    if table is None:
        table = TextIds()
        try:
            tokenizer._pzstream_text_ids = table
        except AttributeError:  # a tokenizer that takes no attributes: a table per call, nothing kept
            pass
    return table


def encode_many(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text tokenised on its own (no special tokens), in one batched call for the texts not
    tokenised before (``text_ids``)."""
    if not texts:
        return []
    return text_ids(tokenizer).encode(tokenizer, [str(t) for t in texts])


def lead_ids(tokenizer: Any) -> list[int]:
    """The special ids the tokenizer puts before every text it encodes (``[bos]`` for Gemma's,
    ``[]`` for Qwen2's and SmolLM2's). Cached on the tokenizer."""
    cached = getattr(tokenizer, "_pzstream_lead_ids", None)
    if cached is not None:
        return list(cached)
    plain = list(tokenizer("x", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("x")["input_ids"])
    at = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), 0)
    lead = full[:at] if plain else []
    try:
        tokenizer._pzstream_lead_ids = tuple(lead)
    except AttributeError:
        pass
    return lead


def _with_lead(lead: list[int], ids: list[int], end: int, max_tokens: int | None) -> list[int]:
    """``lead + ids`` cut to ``max_tokens`` from the front of ``ids`` (the lead stays); a prompt
    whose text already starts with the lead (a chat template that renders ``<bos>``) keeps one."""
    if lead and ids[:len(lead)] == lead:
        ids = ids[len(lead):]
    if not lead:
        return keep_last(ids or [end], max_tokens)
    room = None if max_tokens is None else max_tokens - len(lead)
    if room is not None and room < 1:
        return keep_last(lead + ids, max_tokens)
    return lead + (keep_last(ids, room) if ids else [])


def keep_last(ids: Sequence[int], max_tokens: int | None) -> list[int]:
    """The last ``max_tokens`` ids (all when ``max_tokens`` is None): the prompt's end holds the
    instruction and the current observation, its start only the oldest history."""
    ids = list(ids)
    if max_tokens is not None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        ids = ids[-max_tokens:]
    return ids


def cap_prompt(tokenizer: Any, prompt: str, max_tokens: int) -> str:
    """A prompt text cut to its last ``max_tokens`` tokens (unchanged when it fits): the last
    step of ``prompts.fit_prompt``, and the prior server's guard on what peers send. A prompt in
    the tokenizer's chat frame loses the start of its user turn instead, so the frame (system and
    user openings, the assistant opening and what follows it) stays whole where it fits at all."""
    ids = encode_many(tokenizer, [prompt])[0]
    if len(ids) <= max_tokens:
        return prompt
    frame = chat_frame(tokenizer)
    if frame is not None and prompt.startswith(frame.head) and frame.tail in prompt[len(frame.head):]:
        cut = prompt.rindex(frame.tail)
        head, user, rest = prompt[:len(frame.head)], prompt[len(frame.head):cut], prompt[cut:]
        room = max_tokens - sum(len(x) for x in encode_many(tokenizer, [head, rest]))
        if room >= 1:
            return head + tokenizer.decode(keep_last(encode_many(tokenizer, [user])[0], room)) + rest
    return tokenizer.decode(keep_last(ids, max_tokens))


def answer_ids(tokenizer: Any, candidate: str, continuation: str = DEFAULT_CONTINUATION,
               max_answer_tokens: int = MAX_ANSWER_TOKENS) -> list[int]:
    """The answer's ids: continuation text cut to ``max_answer_tokens``, then ``answer_end_id``."""
    return encode_answers(tokenizer, [candidate], continuation, max_answer_tokens)[0]


def encode_answers(tokenizer: Any, candidates: Sequence[str], continuation: str = DEFAULT_CONTINUATION,
                   max_answer_tokens: int = MAX_ANSWER_TOKENS) -> list[list[int]]:
    """``answer_ids`` of many candidates in one tokenizer call."""
    if max_answer_tokens < 1:
        raise ValueError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
    if isinstance(candidates, str):
        raise TypeError("candidates must be a list of strings, not a string")
    end = answer_end_id(tokenizer)
    enc = encode_many(tokenizer, [continuation.format(action=str(c)) for c in candidates])
    return [x[:max_answer_tokens] + [end] for x in enc]


def prompt_ids(tokenizer: Any, prompt: str, max_tokens: int | None = None) -> list[int]:
    """The prompt's ids (``lead_ids`` first; ``[eos]`` when it has none), cut to ``max_tokens``."""
    return _with_lead(lead_ids(tokenizer), encode_many(tokenizer, [prompt])[0], eos_id(tokenizer), max_tokens)


def encode_pair(tokenizer: Any, prompt: str, candidate: str, continuation: str = DEFAULT_CONTINUATION,
                max_prompt_tokens: int | None = None,
                max_answer_tokens: int = MAX_ANSWER_TOKENS) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one candidate after one prompt, by the rule in the module docstring."""
    return (prompt_ids(tokenizer, prompt, max_prompt_tokens),
            answer_ids(tokenizer, candidate, continuation, max_answer_tokens))


def encode_roots(tokenizer: Any, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
                 continuation: str = DEFAULT_CONTINUATION, max_answer_tokens: int = MAX_ANSWER_TOKENS,
                 max_total_tokens: int | None = None) -> tuple[list[list[int]], list[list[list[int]]]]:
    """``encode_pair`` for every candidate of every root, in one tokenizer call.

    Returns (prompt ids per root, answer ids per candidate per root). With ``max_total_tokens``
    (a model's context) each prompt keeps its last tokens so that it and its longest answer fit.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings (one per root), not a string")
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists: need one list per prompt")
    for i, cands in enumerate(candidates):
        if isinstance(cands, str):
            raise TypeError(f"root {i}: candidates must be a list of strings, not a string")
        if len(cands) == 0:
            raise ValueError(f"root {i}: empty candidate list; every root needs at least one candidate action")
    end, lead = eos_id(tokenizer), lead_ids(tokenizer)
    flat = [c for cands in candidates for c in cands]
    answers = encode_answers(tokenizer, flat, continuation, max_answer_tokens)
    p_enc = encode_many(tokenizer, list(prompts))
    p_ids: list[list[int]] = []
    a_ids: list[list[list[int]]] = []
    at = 0
    for p, cands in zip(p_enc, candidates):
        cs = answers[at:at + len(cands)]
        at += len(cands)
        keep = None if max_total_tokens is None else max(1, max_total_tokens - max(len(x) for x in cs))
        p_ids.append(_with_lead(lead, p, end, keep))
        a_ids.append(cs)
    return p_ids, a_ids
