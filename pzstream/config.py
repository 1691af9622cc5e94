"""Typed configuration: YAML files plus ``key=value`` overrides, validated by pydantic.

Every section forbids unknown keys, so a typo is an error that names the key
(``hub.credit_windw: extra inputs are not permitted``) instead of a silent default.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
DEFAULT_CONFIG = CONFIG_DIR / "debug.yaml"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HubConfig(_Section):
    """The learner hub. ``address`` is the segment ROUTER; the other sockets sit on the
    next ports (weights PUB at +1, log intake at +2, monitor feed at +3)."""

    address: str = "tcp://127.0.0.1:5555"
    credit_window: int = Field(32, ge=1, le=4096, description="segments a collector may have in flight")
    heartbeat_s: float = Field(1.0, gt=0, le=60)
    peer_timeout_heartbeats: int = Field(5, ge=2, description="silent heartbeats before a peer is declared lost")
    report_every_s: float = Field(5.0, gt=0)
    stall_s: float = Field(0.0, ge=0, description="testing aid: sleep this long per segment (simulates a slow hub)")
    # memory caps: what a peer can make the hub hold is bounded here, never by the peer (docs/wire.md, "Caps")
    max_peers: int = Field(1024, ge=1, description="connections kept in the peer table, live and gone; a hello beyond "
                           "it prunes the longest-gone peers first, and is refused (too_many_peers) when all are live")
    peer_ttl_s: float = Field(600.0, ge=0, description="a lost or departed peer (and its stats) is forgotten this long "
                              "after it went")
    max_hello_bytes: int = Field(64 * 1024, ge=256, description="largest hello frame; a bigger one is refused "
                                 "(hello_too_large): a hello is kept as long as its peer")
    max_stat_bytes: int = Field(4096, ge=64, description="heartbeat stats kept per peer, counted as key characters + "
                                "8 per number; keys past it (and keys over 64 characters) are dropped")
    max_games: int = Field(256, ge=1, description="games counted apart in per_game; segments of further games count "
                           "under '(other)'")
    recv_queue_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024, description="frames the hub's ROUTER holds "
                                  "per connection (RCVHWM = this / wire.max_message_bytes, at least 2) and frames "
                                  "one receive batch holds")
    max_pending_fetches: int = Field(16, ge=2, description="messages the hub queues to one peer that does not read "
                                     "them (SNDHWM; weights chunks of 512 KiB are the large ones); more are dropped "
                                     "and counted")
    max_log_bytes: int = Field(64 * 1024, ge=1024, description="largest log record the log intake relays; bigger ones "
                               "are dropped (counted)")
    log_queue_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024, description="log records queued per connection in "
                                 "and per monitor out (high-water marks = this / max_log_bytes)")

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        # the hub's own replay is gone (the trainer keeps one: trainer.replay_capacity_steps);
        # old config files that still set it keep loading
        if isinstance(data, dict) and "replay_capacity_steps" in data:
            import warnings

            data = {k: v for k, v in data.items() if k != "replay_capacity_steps"}
            warnings.warn("hub.replay_capacity_steps is ignored: the hub keeps no replay "
                          "(the trainer's is trainer.replay_capacity_steps)", stacklevel=2)
        return data


class CollectorConfig(_Section):
    """One collector process: plays ``game`` and streams segments to ``learner``."""

    learner: str = "tcp://127.0.0.1:5555"
    id: str | None = Field(None, description="unique collector id; default host-pid")
    game: str = "default"
    policy: Literal["mcts", "random"] = Field("mcts", description="mcts over the world model, or uniform random")
    segment_steps: int = Field(50, ge=1, le=4096)
    max_episode_steps: int = Field(100, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many env steps")
    seed: int = 0
    games: int = Field(1, ge=1, le=256, description="game instances this collector plays, each in its own thread and "
                       "streamed as its own peer (id ID-gK, seed seed + 1000 K); their moves are searched together "
                       "(one batch of the waiting instances' roots: pzstream/move_batcher.py) or sent to the search "
                       "server at once; max_steps counts per instance")
    games_max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="games > 1, local search: longest wait for "
                                     "the other instances' moves once one waits (a slow game holds none back longer)")
    count: int = Field(2, ge=1, le=64, description="collectors started by --role all")
    policies: list[Literal["mcts", "random"]] = Field(
        default_factory=list, description="--role all: policy of collector i is policies[i % len]; empty = collector.policy")
    search: Literal["local", "server"] = Field(
        "local", description="mcts: search in this process, or ask the --role search server at collector.search_server")
    search_server: str | None = Field(None, description="tcp://host:port of this collector's --role search server")
    search_deadline_ms: float = Field(2000.0, gt=0, description="a server answer later than this: play the move locally")
    search_retry_s: float = Field(2.0, ge=0, description="after a fallback, search locally this long before asking again")
    search_fallback: Literal["local", "wait"] = Field(
        "local", description="search=server and no answer in time: local = search this move here (the collector loads "
                             "the LLM too); wait = ask again every search_retry_s (the collector loads no LLM: for "
                             "LLMs too large to run beside every collector)")

    @model_validator(mode="after")
    def _server_named(self) -> "CollectorConfig":
        if self.search == "server" and not self.search_server:
            raise ValueError("collector.search=server needs collector.search_server=tcp://HOST:PORT")
        return self


class SearchServerConfig(_Section):
    """``--role search``: batched MCTS for many collectors (pzstream/roles/search_server.py)."""

    address: str | None = Field(None, description="where --role search binds (tcp://0.0.0.0:PORT); --role all starts "
                                                  "one there when set")
    start: Literal["auto", "always", "never"] = Field(
        "auto", description="--role all: start a search server for its collectors? auto = when search_server.device is "
                            "a GPU or the collectors are at least auto_collectors_per_cpu x the CPU cores (where "
                            "bench/serve.py measured it faster); always; never (an address set means always)")
    auto_collectors_per_cpu: float = Field(4.0, gt=0, description="start: auto on a CPU-only server (see start)")
    max_batch: int = Field(32, ge=1, le=1024, description="roots searched together")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="longest wait for more roots once one is queued")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N")
    threads: int = Field(2, ge=1, description="torch threads of the server")
    pipeline: Literal["auto", "always", "never"] = Field(
        "auto", description="price the next batch (its LLM prior) while this one searches? auto = when the LLM "
                            "prior runs on a GPU, not without an LLM or on a CPU (bench/serve.py measured both)")
    prior: Literal["inline", "process"] = Field(
        "inline", description="where the search server's LLM prior runs: inline (in its process) or process (a --role "
                              "prior server it starts beside itself on the same device and asks over ipc: the prior and "
                              "the tree search then run at once, each with its own interpreter lock; llm.prior_server, "
                              "when set, names a running prior server to ask instead)")
    keep_steps: int = Field(16, ge=0, le=4096, description="history steps kept per collector (>= what the world "
                                                          "model and the LLM prompt read)")
    seed: int = 0
    max_request_bytes: int = Field(256 * 1024, ge=1024, description="largest search request; a bigger one is refused "
                                   "(too_large) before it is decoded")


class EnvConfig(_Section):
    games_dir: str | None = Field(None, description="directory of Jericho story files; default ../shared/games/jericho")
    cache_dir: str | None = Field(None, description="where generated games live; default ~/.cache/pzstream")
    valid_action_cache_size: int = Field(100_000, ge=0)
    valid_actions_budget_s: float | None = Field(
        0.5, ge=0, description="seconds a collector's move waits for a valid-action miss (computed in a helper "
        "process) before playing with fallback candidates; null: wait for it (evaluation always waits)")
    valid_action_helpers: int = Field(1, ge=1, le=16, description="helper processes per collector computing valid "
                                      "actions (~345 MB each); 2 keeps a move from waiting behind the state just left")


class WireConfig(_Section):
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_array_elements: int = Field(1 << 22, ge=1)
    max_steps: int = Field(4096, ge=1)
    max_candidates_per_step: int = Field(1024, ge=1)
    max_weights_bytes: int = Field(16 * 1024 ** 3, ge=1024, description="largest weights a reader (collector, prior or "
                                   "search server, PPO worker) fetches: a notice declaring more is refused before any "
                                   "chunk is fetched")


class SecurityConfig(_Section):
    """ZeroMQ CURVE. ``curve_dir`` holds keys made by ``launch.py --role keys``."""

    curve_dir: str | None = None
    allow_insecure: bool = Field(False, description="bind a non-loopback address without CURVE")


class TrainerConfig(_Section):
    """World-model training beside the hub, in its own process (so neither stalls the other)."""

    enabled: bool = True
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="where the world model trains: cpu, cuda or cuda:N")
    autocast: str = Field("none", pattern=r"^(none|bfloat16)$",
                          description="world-model training's forward and losses in bfloat16 (weights stay fp32): none or bfloat16")
    threads: int = Field(1, ge=1, description="torch threads of the trainer process")
    min_replay_steps: int = Field(200, ge=1, description="steps stored before training starts")
    replay_capacity_steps: int = Field(50_000, ge=100)
    pipe_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024, description="segment bytes the hub forwards to the "
                            "trainer before it has taken them off its pipe; more are dropped for the trainer (counted: "
                            "trainer_dropped_for_bytes)")
    replay_capacity_bytes: int = Field(1024 ** 3, ge=1024 * 1024, description="the replay's bytes (segment frames as "
                                       "received, plus the decoded strings' overhead); the oldest segments go first")
    publish_every: int = Field(25, ge=1, description="publish new weights every N updates")
    log_every: int = Field(25, ge=1, description="log losses every N updates")
    max_updates_per_s: float = Field(0.0, ge=0, description="0 = as fast as the CPU allows")
    max_wm_lag: int | None = Field(None, ge=0, description="segments played with weights older than this are dropped (counted)")
    tensorboard: bool = True
    fail_every: int = Field(0, ge=0, description="testing aid: every N-th world-model update a trainer process "
                            "attempts raises inside the update (0 = never); it is logged, counted "
                            "(trainer_failed_updates) and skipped")
    crash_at_update: int = Field(0, ge=0, description="testing aid: a trainer that started without a checkpoint "
                                 "exits with code 70, as a crash, at this update (0 = never); the hub starts another, "
                                 "which resumes from the run's checkpoints and does not crash again")


class SearchSection(_Section):
    """MCTS at the collectors (see pzstream/search)."""

    num_simulations: int = Field(16, ge=1, le=4096)
    pb_c_base: float = Field(19652.0, gt=0)
    pb_c_init: float = Field(1.25, gt=0)
    discount: float = Field(0.997, gt=0, le=1)
    dirichlet_alpha: float = Field(0.3, gt=0)
    root_noise_fraction: float = Field(0.25, ge=0, le=1)
    temperature: float = Field(1.0, ge=0)
    backend: Literal["numpy", "lightzero"] = "numpy"
    cuda_graphs: bool = Field(False, description="replay the world model's recurrent step as CUDA graphs, one per "
                              "batch bucket (a search on a GPU; pzstream/model/graphs.py; off until measured faster: "
                              "bench/serve.py --sweep with and without it)")


class LLMSection(_Section):
    """The LLM prior at the MCTS root and its built-in training (PriorZero)."""

    enabled: bool = Field(True, description="score candidates with the LLM and mix its prior into the root")
    model: str = Field("tiny", description="'tiny' (built locally), 'random:qwen2.5-0.5b' / -1.5b / -7b (a real shape "
                                           "with random weights, built locally: pzstream/llm/shapes.py), "
                                           "'smollm2-135m-instruct' / 'gemma3-270m' (packaged pretrained models) or a "
                                           ".gguf file (converted once to a cached model directory: "
                                           "pzstream/llm/packaged.py), a local directory, or a Hugging Face name")
    backend: Literal["transformers", "vllm"] = Field("transformers", description="scoring engine of collectors and prior servers")
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="weights of the scoring LLM (transformers backend); new weights are cast to it as they "
                               "load. bfloat16 measured faster only from 32 roots a batch on an H200 (bench/RESULTS.md)")
    compile: bool = Field(False, description="torch.compile the scoring LLM's decoder layers (transformers backend, "
                          "a GPU only; the first scoring calls compile, a failed compile runs eagerly): "
                          "bench/prior.py --compile measures it")
    temperature: float = Field(1.0, gt=0, description="prior = log_softmax(mean token log-prob / temperature); 1.0 "
                                                      "ranked the walkthrough's action best (bench/prior_quality.py)")
    prompt_format: Literal["priorzero", "orz"] = Field(
        "orz", description="orz (through the chat template where the tokenizer has one) ranked the walkthrough's "
                           "action best for SmolLM2-135M (bench/RESULTS.md, the walkthrough yardstick)")
    history_len: int = Field(3, ge=0)
    list_candidates: bool = Field(False, description="list the candidate actions in the prompt (PPO prompts always do)")
    max_prompt_tokens: int = Field(512, ge=16)
    memo_entries: int = Field(4096, ge=0, description="priors of recently scored roots kept per process and reused "
                                                      "while the weights stay the same (0 = off): pzstream/llm/memo.py")
    mix: Literal["fixed", "adaptive", "adaptive_priorzero", "adaptive_entropy"] = Field(
        "fixed", description="LLM weight at the root: fixed_weight; adaptive_priorzero = more LLM when the world model "
                             "is confident (PriorZero); adaptive_entropy = more LLM when it is undecided; adaptive = "
                             "the one bench/mix.py found better (pzstream/search/mixing.py ADAPTIVE_MEANS)")
    fixed_weight: float = Field(0.5, ge=0, le=1)
    adaptive_low: float = Field(0.3, ge=0, le=1)
    adaptive_high: float = Field(0.7, ge=0, le=1)
    prior_server: str | None = Field(None, description="tcp://host:port of a --role prior server; None = in process")
    prior_timeout_s: float = Field(2.0, gt=0)
    prior_max_request_bytes: int = Field(256 * 1024, ge=1024, description="the prior server's largest score request; a "
                                         "bigger one is refused (too_large) before it is decoded")
    prior_max_roots: int = Field(64, ge=1, description="roots of one score request the prior server accepts")
    prior_max_candidates: int = Field(2048, ge=1, description="candidates of one score request (all its roots) the "
                                      "prior server accepts: its cost grows with them")
    train: bool = Field(True, description="train the LLM on the learner (SFT/RFT) and publish its weights")
    train_mode: Literal["sft", "sft_visits", "rft"] = "sft"
    train_every: int = Field(4, ge=1, description="one LLM update per this many world-model updates")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-4, gt=0)
    publish_every: int = Field(20, ge=1, description="publish LLM weights every N LLM updates")

    @model_validator(mode="after")
    def _range(self) -> "LLMSection":
        if self.adaptive_low > self.adaptive_high:
            raise ValueError(f"llm.adaptive_low ({self.adaptive_low}) > llm.adaptive_high ({self.adaptive_high})")
        return self


# --- the grammar of ppo.rewards (the reward functions themselves live in pzstream.orz.rewards)

REWARD_NAMES = ("exact", "fuzzy", "format", "progress")


@dataclass(frozen=True)
class RewardSpec:
    """One term of the episode reward: ``weight * components[name]``; name in ``REWARD_NAMES``."""
    name: str
    weight: float


def _one_spec(item: object) -> RewardSpec:
    if isinstance(item, RewardSpec):
        name, weight = item.name, item.weight
    elif isinstance(item, str):
        name, sep, raw = item.partition(":")
        name, raw = name.strip(), raw.strip()
        if sep and not raw:
            raise ValueError(f"reward spec {item!r} has no weight after ':'")
        weight = raw if sep else 1.0
    elif isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str):
        name, weight = item[0].strip(), item[1]
    else:
        raise ValueError(f"reward spec {item!r} is neither 'name[:weight]' nor a (name, weight) pair")
    if name not in REWARD_NAMES:
        raise ValueError(f"unknown reward {name!r} in {item!r}; known: {', '.join(REWARD_NAMES)}")
    if isinstance(weight, bool):
        raise ValueError(f"reward {name!r}: weight {weight!r} is not a number")
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"reward {name!r}: weight {weight!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"reward {name!r}: weight {weight!r} is not finite")
    return RewardSpec(name, value)


def parse_reward_specs(spec: str | Sequence[object]) -> list[RewardSpec]:
    """Reward terms from "exact", "exact:1.0,format:0.1", a (name, weight) pair, or a list of
    such strings, pairs or RewardSpecs. A name without a weight weighs 1.0.

    Raises ValueError for an unknown name, a weight that is not a finite number, a name given
    twice, or no terms at all.
    """
    if isinstance(spec, str):
        parts: list[object] = [spec]
    elif isinstance(spec, Sequence):
        one_pair = len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], (int, float))
        parts = [spec] if one_pair else list(spec)
    else:
        raise ValueError(f"reward spec {spec!r} is neither a string nor a sequence")
    items: list[object] = []
    for part in parts:
        if isinstance(part, str):
            items.extend(p for p in part.split(",") if p.strip())
        else:
            items.append(part)
    if not items:
        raise ValueError(f"reward spec {spec!r} names no reward; use e.g. 'exact' or 'exact:1.0,format:0.1'")
    specs = [_one_spec(item) for item in items]
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"reward {name!r} is given {names.count(name)} times in {spec!r}")
    return specs


class PPOSection(_Section):
    """ORZ-style PPO episodes on the LLM, fired from the hub's prompt queue (pzstream/orz).

    Names and defaults of the PPO knobs follow Open-Reasoner-Zero's PPOExpConfig; the
    learning rates are ORZ's (for billion-parameter models: the tiny default model needs ~1e-3,
    which config/debug.yaml sets).
    """

    enabled: bool = Field(False, description="fire PPO episodes on the LLM from the prompt queue")
    runtime: Literal["auto", "ray", "inprocess"] = Field(
        "auto", description="ray = Ray actors + vLLM engines + DeepSpeed; inprocess = transformers + torch; "
                            "auto = ray where ray, vllm and deepspeed import")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="the in-process runtime's device for policy, "
                        "critic and reference (the ray runtime places its actors on GPUs itself)")
    fire_threshold: int = Field(64, ge=1, description="queued prompt samples that fire an episode")
    compile: bool = Field(False, description="torch.compile the policy's and critic's decoder layers for their "
                          "training steps on a GPU (1.67x on an H100 at 0.5 B; the first episode compiles); not under "
                          "ZeRO-3")
    min_interval_s: float = Field(0.0, ge=0, description="least seconds from one episode's start to the next's (0: "
                                  "back to back); paces PPO where it shares a GPU with the search server and the "
                                  "trainer. In schedule.mode=alternating a PPO phase that comes sooner is skipped")
    queue_capacity: int = Field(4096, ge=1, description="prompt queue bound; the oldest are evicted (counted)")
    queue_capacity_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024, description="prompt queue bound in bytes "
                                      "(the segment frames its samples come from); the oldest go first (counted)")
    rollout_batch_size: int = Field(16, ge=1, description="prompts per episode")
    n_samples_per_prompt: int = Field(4, ge=1)
    micro_train_batch_size: int = Field(8, ge=1)
    micro_forward_batch_size: int = Field(16, ge=1)
    policy_update_steps: int = Field(1, ge=1, description="optimizer steps of the policy per episode")
    critic_update_steps: int = Field(1, ge=1, description="optimizer steps of the critic per episode")
    actor_learning_rate: float = Field(1e-6, gt=0)
    critic_learning_rate: float = Field(5e-6, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lambd: float = Field(1.0, ge=0, le=1)
    eps_clip: float = Field(0.2, gt=0)
    value_clip: float = Field(0.2, gt=0)
    use_kl_loss: bool = True
    kl_loss_coef: float = Field(0.001, ge=0)
    use_grpo: bool = Field(False, description="group-normalised advantages, no critic")
    advantage_normalize: bool = True
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage of policy and critic (ray runtime)")
    colocate_all: bool = Field(True, description="policy, critic, reference and vLLM engines share one placement bundle")
    vllm_num_engines: int = Field(1, ge=1)
    ray_address: str | None = Field(None, description="an existing Ray cluster; None = start a local one")
    ray_num_cpus: float | None = Field(None, gt=0, description="CPUs of a local Ray; None = all")
    answer_mode: Literal["choice", "free"] = Field(
        "choice", description="choice = decoding constrained to '</think><answer>CANDIDATE</answer>'; free = free text")
    generate_max_len: int = Field(64, ge=1, description="response token cap (free mode)")
    prompt_max_len: int = Field(512, ge=16)
    max_response_chars: int = Field(512, ge=16, description="responses longer than this earn the malformed reward")
    temperature: float = Field(1.0, gt=0)
    rewards: list[str] = Field(default_factory=lambda: ["exact:1.0"],
                               description="name:weight terms among exact, fuzzy, format, progress")
    progress_value_weight: float = Field(0.0, ge=0, description="progress reward: game reward + this x value of the result")
    seed: int = 0
    episode_timeout_s: float = Field(900.0, gt=0, description="an episode running longer is failed")
    fail_episodes: list[PositiveInt] = Field(default_factory=list, description="testing aid: these episodes (the hub numbers "
                                     "them from 1) raise inside the episode, at their first reward; e.g. 2 or '2,5'")

    @field_validator("fail_episodes", mode="before")
    @classmethod
    def _episode_list(cls, v: Any) -> Any:
        # from the command line: ppo.fail_episodes=2 or ppo.fail_episodes=2,5 (YAML reads an int or a string)
        if isinstance(v, int) and not isinstance(v, bool):
            return [v]
        if isinstance(v, str):
            try:
                return [int(x) for x in v.split(",") if x.strip()]
            except ValueError:
                raise ValueError(f"{v!r} is not a list of episode numbers such as '2,5'") from None
        return v

    @model_validator(mode="after")
    def _divisible(self) -> "PPOSection":
        n = self.rollout_batch_size * self.n_samples_per_prompt
        for steps_key, steps in (("policy_update_steps", self.policy_update_steps),
                                 ("critic_update_steps", self.critic_update_steps)):
            if n % steps:
                raise ValueError(f"ppo.rollout_batch_size x ppo.n_samples_per_prompt = {n} does not divide into "
                                 f"ppo.{steps_key} = {steps} mini-batches")
            if (n // steps) % self.micro_train_batch_size:
                raise ValueError(f"a mini-batch of {n // steps} samples (ppo.rollout_batch_size x ppo.n_samples_per_prompt"
                                 f" / ppo.{steps_key}) does not divide into ppo.micro_train_batch_size = "
                                 f"{self.micro_train_batch_size}")
        if self.fire_threshold < self.rollout_batch_size:
            raise ValueError(f"ppo.fire_threshold ({self.fire_threshold}) < ppo.rollout_batch_size ({self.rollout_batch_size})")
        if self.queue_capacity < self.fire_threshold:
            raise ValueError(f"ppo.queue_capacity ({self.queue_capacity}) < ppo.fire_threshold ({self.fire_threshold})")
        if self.use_grpo and self.n_samples_per_prompt < 2:
            raise ValueError("ppo.use_grpo needs ppo.n_samples_per_prompt >= 2 (advantages are relative to the group)")
        parse_reward_specs(self.rewards)
        return self


class RunConfig(_Section):
    name: str = "debug"
    max_seconds: float | None = Field(None, gt=0)
    log_level: LogLevel = "INFO"
    out_dir: str = "runs"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class ScheduleConfig(_Section):
    """How collection, world-model training and PPO share the run (pzstream/hub/schedule.py)."""

    mode: Literal["async", "alternating"] = Field(
        "async", description="async: everything at once (the design); alternating: PriorZero's turns, enforced by the "
                             "hub (collect collect_steps, then train_updates world-model updates, then ppo_episodes)")
    collect_steps: int = Field(2000, ge=1, description="alternating: env steps accepted per collect phase")
    train_updates: int = Field(100, ge=1, description="alternating: world-model updates per train phase")
    ppo_episodes: int = Field(1, ge=0, le=1, description="alternating: PPO episodes per cycle (0 or 1)")
    gpu_share: Literal["off", "auto"] = Field(
        "off", description="async: auto = pace the world-model trainer by the search servers' own measured ms a batch, "
                           "so that a GPU they share keeps the search near its pace alone (pzstream/hub/gpu_share.py; "
                           "not yet measured on a GPU)")
    search_slowdown: float = Field(1.5, gt=1.0, description="gpu_share=auto: a search batch slower than this many "
                                   "times its pace alone halves the trainer's updates a second")
    min_updates_per_s: float = Field(1.0, gt=0, description="gpu_share=auto: the trainer is never paced below this")
    pace_every_s: float = Field(10.0, gt=0, description="gpu_share=auto: seconds between two decisions")

    @model_validator(mode="after")
    def _gpu_share_is_async(self) -> "ScheduleConfig":
        if self.gpu_share == "auto" and self.mode != "async":
            raise ValueError("schedule.gpu_share=auto paces the asynchronous schedule; mode=alternating takes turns "
                             "already (set schedule.gpu_share=off or schedule.mode=async)")
        return self


class CheckpointConfig(_Section):
    """Checkpoints of the learner role (pzstream/stream/checkpoint.py): the hub, the world-model trainer and
    the PPO worker each save their state under ``runs/<name>/checkpoints`` every ``every_s`` and when
    the learner stops; ``launch.py --resume RUN_DIR`` continues from the newest complete one."""

    enabled: bool = True
    every_s: float = Field(300.0, gt=0, description="seconds between checkpoints (one more is written at a clean stop)")
    keep: int = Field(2, ge=1, description="complete checkpoints kept per process (older ones and their journals go)")
    stop_grace_s: float = Field(60.0, gt=0, description="how long a helper may take to write its last checkpoint at stop")


class Config(_Section):
    run: RunConfig = RunConfig()
    hub: HubConfig = HubConfig()
    collector: CollectorConfig = CollectorConfig()
    env: EnvConfig = EnvConfig()
    wire: WireConfig = WireConfig()
    security: SecurityConfig = SecurityConfig()
    trainer: TrainerConfig = TrainerConfig()
    search: SearchSection = SearchSection()
    search_server: SearchServerConfig = SearchServerConfig()
    llm: LLMSection = LLMSection()
    ppo: PPOSection = PPOSection()
    schedule: ScheduleConfig = ScheduleConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    model: dict[str, Any] = Field(default_factory=dict, description="WorldModelConfig fields (pzstream/model/config.py), "
                                  "and `preset` (e.g. unizero-jericho) whose fields the others override")

    @field_validator("model")
    @classmethod
    def _model_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        from pzstream.model.config import world_model_config

        world_model_config(v)  # ValueError naming the key, value or preset
        return v

    def world_model(self):  # -> WorldModelConfig (imported lazily: torch is heavy)
        from pzstream.model.config import world_model_config

        return world_model_config(self.model)

    def search_config(self):  # -> pzstream.search.SearchConfig
        from pzstream.search import SearchConfig

        return SearchConfig(**self.search.model_dump(exclude={"cuda_graphs"}))  # how the model steps, not the tree

    @model_validator(mode="after")
    def _one_llm_trainer(self) -> "Config":
        if self.ppo.enabled and self.llm.train:
            raise ValueError("ppo.enabled and llm.train both train and publish the LLM: set one of them false")
        if self.ppo.enabled and not self.llm.enabled:
            raise ValueError("ppo.enabled needs llm.enabled (the PPO-trained LLM is the collectors' prior)")
        return self

    @model_validator(mode="after")
    def _segment_fits_wire(self) -> "Config":
        if self.collector.segment_steps > self.wire.max_steps:
            raise ValueError(
                f"collector.segment_steps={self.collector.segment_steps} exceeds wire.max_steps={self.wire.max_steps}")
        return self


def parse_override(text: str) -> tuple[list[str], Any]:
    """``hub.credit_window=64`` -> (["hub", "credit_window"], 64); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {e}") from e
    return parts, value


def _set_path(tree: dict[str, Any], parts: list[str], value: Any) -> None:
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(parts)}: {p} is not a section")
        node = child
    node[parts[-1]] = value


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "<root>"
        lines.append(f"  {key}: {e['msg']}" + (f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""))
    return "\n".join(lines)


def devices(cfg: Config) -> dict[str, str]:
    """Where each part of a run computes (the placement a run logs at start)."""
    return {"trainer": cfg.trainer.device, "search server": cfg.search_server.device,
            "llm prior (collectors, prior server)": cfg.llm.device,
            "ppo": cfg.ppo.device if cfg.ppo.runtime != "ray" else "ray actors (one GPU each)", "collectors": "cpu"}


def check_devices(cfg: Config, gpus: int) -> None:
    """Raise ConfigError when a section names a CUDA device this host does not have (``gpus`` present)."""
    wanted = {"trainer.device": cfg.trainer.device, "search_server.device": cfg.search_server.device,
              "llm.device": cfg.llm.device, "ppo.device": cfg.ppo.device}
    bad = []
    for key, dev in wanted.items():
        if not dev.startswith("cuda"):
            continue
        index = int(dev.split(":")[1]) if ":" in dev else 0
        if index >= gpus:
            bad.append(f"{key}={dev}")
    if bad:
        have = f"{gpus} GPU(s): " + ", ".join(f"cuda:{i}" for i in range(gpus)) if gpus else "no GPU"
        raise ConfigError(f"{', '.join(bad)}: this host has {have} (set the device to cpu or one that exists)")


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load ``path`` (default config/debug.yaml), apply overrides, validate."""
    source = Path(path) if path is not None else DEFAULT_CONFIG
    if not source.exists():
        candidate = CONFIG_DIR / f"{source}.yaml"
        if path is not None and candidate.exists():
            source = candidate
        else:
            raise ConfigError(f"config file not found: {source} (configs in {CONFIG_DIR}: "
                              f"{', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.yaml')))})")
    try:
        tree = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    for item in overrides:
        parts, value = parse_override(item)
        _set_path(tree, parts, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, str(source) + (" + overrides" if overrides else ""))) from None
