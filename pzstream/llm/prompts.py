"""Prompt construction for LLM action priors and ORZ-style generation.

Two formats, chosen by ``PromptConfig.format``:

``"priorzero"`` (default). The prompt is a header, the last ``history_len`` steps of
(observation, action, reward), the current observation, optionally the candidate list,
and an instruction that ends with ``Action:``. A candidate action ``a`` is scored as the
continuation ``" " + a`` (``PromptConfig.continuation(a)``), so prompt + continuation
reads ``... Action: take lamp``.

``"orz"``. The Open-Reasoner-Zero conversation: the game state goes inside ``User: ...``,
the assistant is told to reason inside ``<think> </think>`` and to give the action inside
``<answer> </answer>``.
  * ``build_generation_prompt`` ends with ``Assistant: <think>`` (the model writes its
    reasoning, ``</think>``, then ``<answer>...</answer>``).
  * ``build_prompt`` (the scoring prompt) ends with
    ``Assistant: <think>{thought}</think>\\n<answer>`` (``thought`` defaults to ``""``) and
    a candidate ``a`` is scored as the continuation ``a + "</answer>"``; the full text
    reads ``...<answer>take lamp</answer>``. The closing tag is part of what is scored:
    it is how the model says the answer is complete.

History is a sequence of ``(observation, action, reward)`` triples, oldest first; only the
last ``history_len`` are used. Any value is turned into text with ``str``.

Fitting to ``max_prompt_tokens`` (``fit_prompt``), measured with the tokenizer:
  1. drop history steps, oldest first, until the prompt fits or no history is left;
  2. cut the current observation from its START (keeping its end, which is usually the
     most recent text), marking the cut with ``TRUNCATION_MARK``;
  3. drop the candidate list, if one was given;
  4. as a last resort (the fixed template alone is too long) keep the last
     ``max_prompt_tokens`` tokens of the prompt (``tokens.cap_prompt``).
The local prior, the collectors that ask the central prior server (``scoring_prompts``), SFT/RFT
and PPO all fit prompts with this one rule.

Instruct models. Every template is a user part (``template``) and the opening of the reply
(``reply_opening``: ``Action:``, or ORZ's ``<think>``). As plain text they are joined by
``plain_joiner`` (the texts above). Where the tokenizer has a chat template (``tokens.chat_frame``),
``fit_prompt`` renders the user part as one user turn of it and the reply opening after the
template's assistant opening: ``<|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\nAction:``;
the answer then ends with the template's end-of-turn token (``tokens.answer_end_id``). Truncation
cuts inside the user turn, so the frame stays intact. ``build_prompt`` (no tokenizer) is plain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .tokens import ChatFrame, cap_prompt, chat_frame, plain_ids, text_ids

TRUNCATION_MARK = "..."

_PZ_HEADER = (
    "You are an expert player of a text adventure game. Your goal is to maximise the "
    "score by choosing the best next action."
)
_PZ_TEMPLATE = (
    "{header}\n\n{history_block}=== Current Situation ===\n{observation}\n\n"
    "{candidates_block}=== Task ===\nChoose the single best next action."
)
_ORZ_TEMPLATE = (
    "A conversation between User and Assistant. The User describes the state of a text "
    "adventure game and the Assistant chooses the next action. The Assistant first thinks "
    "about the reasoning process in the mind and then gives the action. The reasoning "
    "process is enclosed within <think> </think> and the action within <answer> </answer> "
    "tags, i.e., <think> reasoning process here </think> <answer> action here </answer>.\n"
    "User: {header}\n\n{history_block}=== Current Situation ===\n{observation}\n\n"
    "{candidates_block}Think, then give the single best next action."
)


@dataclass(frozen=True)
class PromptConfig:
    """Prompt templates and limits. All templates are ``str.format`` strings.

    ``template`` placeholders: ``{header}``, ``{history_block}``, ``{observation}``,
    ``{candidates_block}``. ``history_step`` placeholders: ``{i}``, ``{observation}``,
    ``{action}``, ``{reward}``. ``candidates_line``: ``{candidates}`` (joined with
    ``candidates_sep``). ``continuation_template``: ``{action}``. ``score_suffix`` (ORZ):
    ``{thought}``; it follows ``reply_opening`` in the scoring prompt. As plain text a prompt is
    ``template + plain_joiner + reply_opening``; under a chat template, the user turn holds
    ``template`` and the assistant turn opens with ``reply_opening``.
    """

    format: str = "priorzero"
    history_len: int = 3
    max_prompt_tokens: int = 1024
    header: str = _PZ_HEADER
    template: str = _PZ_TEMPLATE
    plain_joiner: str = "\n"
    reply_opening: str = "Action:"
    history_title: str = "=== Recent History ===\n"
    history_step: str = "Step {i}:\n  Observation: {observation}\n  Action: {action}\n  Reward: {reward}\n"
    candidates_line: str = "Candidate actions: {candidates}\n\n"
    candidates_sep: str = ", "
    score_suffix: str = ""
    continuation_template: str = " {action}"

    def __post_init__(self) -> None:
        if self.format not in ("priorzero", "orz"):
            raise ValueError(f"PromptConfig.format must be 'priorzero' or 'orz', got {self.format!r}")
        if self.history_len < 0:
            raise ValueError(f"PromptConfig.history_len must be >= 0, got {self.history_len}")
        if self.max_prompt_tokens < 1:
            raise ValueError(f"PromptConfig.max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")

    @classmethod
    def orz(cls, **kw: Any) -> "PromptConfig":
        """The ORZ format: ``<think>...</think>`` then ``<answer>{action}</answer>``."""
        base = dict(format="orz", template=_ORZ_TEMPLATE, plain_joiner="\nAssistant: ", reply_opening="<think>",
                    score_suffix="{thought}</think>\n<answer>",
                    continuation_template="{action}</answer>")
        base.update(kw)
        return cls(**base)

    def continuation(self, action: str) -> str:
        """The text scored for candidate ``action`` after the scoring prompt."""
        return self.continuation_template.format(action=str(action))


def _history_block(cfg: PromptConfig, history: Sequence[Any]) -> str:
    if not history:
        return ""
    steps = []
    for i, step in enumerate(history, start=1):
        obs, action, reward = tuple(step)[:3]
        steps.append(cfg.history_step.format(i=i, observation=str(obs).strip(), action=str(action),
                                             reward=_fmt_reward(reward)))
    return cfg.history_title + "".join(steps) + "\n"


def _fmt_reward(r: Any) -> str:
    if isinstance(r, float) and r.is_integer():
        return str(int(r))
    return str(r)


def _render(cfg: PromptConfig, history: Sequence[Any], observation: str,
            candidates: Sequence[str] | None, thought: str | None, chat: ChatFrame | None = None) -> str:
    cand = ""
    if candidates:
        cand = cfg.candidates_line.format(candidates=cfg.candidates_sep.join(str(c) for c in candidates))
    user = cfg.template.format(header=cfg.header, history_block=_history_block(cfg, history),
                               observation=str(observation).strip(), candidates_block=cand)
    reply = cfg.reply_opening
    if thought is not None and cfg.score_suffix:
        reply += cfg.score_suffix.format(thought=thought)
    if chat is not None:
        return chat.head + user + chat.tail + reply
    return user + cfg.plain_joiner + reply


def _recent(cfg: PromptConfig, history: Sequence[Any] | None) -> list[Any]:
    h = list(history or [])
    return h[len(h) - cfg.history_len:] if cfg.history_len > 0 else []


def build_prompt(cfg: PromptConfig, history: Sequence[Any] | None, observation: str,
                 candidates: Sequence[str] | None = None, thought: str = "") -> str:
    """The scoring prompt: candidate ``a`` is scored as ``cfg.continuation(a)`` after it.

    ``history``: ``(observation, action, reward)`` triples, oldest first (the last
    ``cfg.history_len`` are used). ``candidates``: listed in the prompt when given.
    ``thought``: ORZ only, the reasoning placed inside ``<think>...</think>``.
    No token limit is applied; use ``fit_prompt`` for that.
    """
    return _render(cfg, _recent(cfg, history), observation, candidates, thought)


def build_generation_prompt(cfg: PromptConfig, history: Sequence[Any] | None, observation: str,
                            candidates: Sequence[str] | None = None) -> str:
    """The prompt for free generation (ORZ: ends with ``Assistant: <think>``)."""
    return _render(cfg, _recent(cfg, history), observation, candidates, None)


def _n_tokens(tokenizer: Any, text: str) -> int:
    """A trial text's length (through no table: most trials are thrown away)."""
    return len(plain_ids(tokenizer, [text])[0])


def _fits(tokenizer: Any, text: str, limit: int) -> bool:
    """Whether ``text`` fits ``limit`` tokens; one that fits is what ``fit_prompt`` returns, so its ids go
    into the tokenizer's table, where the scorer finds them (tokenised once)."""
    ids = plain_ids(tokenizer, [text])[0]
    if len(ids) > limit:
        return False
    text_ids(tokenizer).put({text: ids})
    return True


def fit_prompt(tokenizer: Any, cfg: PromptConfig, history: Sequence[Any] | None, observation: str,
               candidates: Sequence[str] | None = None, thought: str = "",
               generation: bool = False) -> str:
    """``build_prompt`` (or ``build_generation_prompt`` if ``generation``) in the tokenizer's chat
    frame where it has one, cut to at most ``cfg.max_prompt_tokens`` tokens by the rule in the
    module docstring."""
    limit = cfg.max_prompt_tokens
    th = None if generation else thought
    hist = _recent(cfg, history)
    obs = str(observation).strip()
    chat = chat_frame(tokenizer)

    def render(h: list[Any], o: str, c: Sequence[str] | None) -> str:
        return _render(cfg, h, o, c, th, chat)

    text = render(hist, obs, candidates)
    if _fits(tokenizer, text, limit):
        return text
    while hist:  # 1. oldest history first
        hist = hist[1:]
        text = render(hist, obs, candidates)
        if _fits(tokenizer, text, limit):
            return text
    for cands in ((candidates, None) if candidates else (None,)):
        # 2. keep the end of the observation: the longest suffix that fits (binary search)
        lo, hi = 0, len(obs)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _n_tokens(tokenizer, render([], TRUNCATION_MARK + obs[len(obs) - mid:], cands)) <= limit:
                lo = mid
            else:
                hi = mid - 1
        if lo > 0 or _n_tokens(tokenizer, render([], TRUNCATION_MARK, cands)) <= limit:
            return render([], (TRUNCATION_MARK + obs[len(obs) - lo:]) if lo < len(obs) else obs, cands)
        # 3. still too long: drop the candidate list and try again
    # 4. the template alone is too long: keep the prompt's last `limit` tokens
    return cap_prompt(tokenizer, render([], "", None), limit)


def scoring_prompts(tokenizer: Any, cfg: PromptConfig, histories: Sequence[Sequence[Any] | None],
                    observations: Sequence[str], candidates: Sequence[Sequence[str]],
                    list_candidates: bool = False) -> list[str]:
    """The scoring prompt of every root, fitted by ``fit_prompt``: what the local prior scores and
    what a collector sends to the central prior server (which then only guards with ``cap_prompt``),
    so both priors score the same ids."""
    return [fit_prompt(tokenizer, cfg, h, o, c if list_candidates else None)
            for h, o, c in zip(histories, observations, candidates)]
