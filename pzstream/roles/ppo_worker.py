"""The PPO worker: a process beside the hub that owns the PPO runtime and runs one episode at a time.

The hub sends an episode request (its prompt samples) over a local PUSH socket and gets back,
over another, either the new policy weights with the episode's metrics or the failure with its
traceback. The hub never waits for an episode: it keeps ingesting and the world-model trainer
keeps training; a failed episode is counted and the next threshold fires a new attempt (the
runtime restarts dead actors first).

Messages on this local channel are the typed ones of ``pzstream.stream.internal``:
    hub -> worker   EpisodeRequest (episode k, its prompt samples), SaveCheckpoint, Stop
    worker -> hub   WorkerReady, EpisodeResult (ok: the new policy weights as payload;
                    otherwise the error and its traceback), WorkerFatal (the runtime could not start)

Checkpoints: on ``SaveCheckpoint(step)``, when an episode has finished since the last one, the
worker writes ``runs/<name>/checkpoints/ppo/step-N``: with the in-process runtime the policy
and critic weights and their AdamW states; with the Ray runtime the policy weights only (a
stated limit: its DeepSpeed optimiser and critic start afresh on resume). A worker that starts
loads the run's newest complete PPO checkpoint, so neither a restarted worker nor a resumed run
goes back to the base model. The request arrives between episodes: an episode in flight is
never interrupted to save.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import traceback
from pathlib import Path


from pzstream.config import Config, PPOSection
from pzstream.roles.faults import failing_reward
from pzstream.roles.lifecycle import die_with_parent
from pzstream.stream.internal import (
    EpisodeRequest,
    EpisodeResult,
    HelperChannel,
    SaveCheckpoint,
    Stop,
    WorkerFatal,
    WorkerReady,
)
from pzstream.orz.episode import RewardFn, run_episode
from pzstream.orz.rewards import combine, parse_answer, parse_reward_specs, text_rewards
from pzstream.orz.samples import PromptSample

log = logging.getLogger("pzstream.orz")


class WorldModelValue:
    """The world model's value of a state, from the newest weights in the hub's mirror of this run
    (``runs/<name>/weights``), read by the same checked client as every reader of weights: the
    bootstrap term of the progress reward. The worker is the hub's own helper on the same host,
    so the mirror is its channel; a file being replaced or damaged keeps the old weights."""

    def __init__(self, cfg: Config, weights_dir: Path):
        from pzstream.model.inference import SearchAdapter
        from pzstream.model.world_model import load_weights_bytes, untrained_world_model
        from pzstream.stream.weights_client import WeightsClient

        self.model = untrained_world_model(cfg.world_model()).eval()
        self.adapter = SearchAdapter(self.model)
        self.weights_dir = weights_dir
        self.client = WeightsClient({"wm": lambda data, _v: load_weights_bytes(self.model, data)}, who="PPO worker")

    @property
    def version(self) -> int:
        return self.client.version("wm")

    def refresh(self) -> None:
        self.client.load_mirror(self.weights_dir)

    def __call__(self, observation: str, valid: list[str]) -> float:
        self.adapter.reset()
        return float(self.adapter.root([[]], [observation], [valid or ["look"]]).value[0])


def build_reward_fn(cfg: PPOSection, games_dir: str | None = None, cache_dir: str | None = None,
                    value_fn=None) -> tuple[RewardFn, object]:
    """The episode's reward: ``ppo.rewards`` terms, weighted. Returns (fn, progress scorer or None).
    ``value_fn(observation, valid_actions)``: the progress reward's bootstrap, weighted by
    ``ppo.progress_value_weight``."""
    specs = parse_reward_specs(cfg.rewards)
    progress = None
    if any(s.name == "progress" for s in specs):
        from pzstream.orz.progress import ProgressReward

        progress = ProgressReward(games_dir=games_dir, cache_dir=cache_dir, value_fn=value_fn,
                                  value_weight=cfg.progress_value_weight)

    def reward(sample: PromptSample, response: str) -> tuple[float, dict[str, float]]:
        parts = text_rewards(response, sample.truth, cfg.max_response_chars)
        if progress is not None:
            answer = parse_answer(response, cfg.max_response_chars).text
            parts["progress"] = (progress(sample.game, sample.prefix, sample.seed, answer)
                                 if sample.prefix is not None and sample.seed is not None else 0.0)
        return combine(parts, specs), parts

    return reward, progress


def runtime_state(runtime, episodes: int) -> dict[str, bytes]:
    """A PPO checkpoint's parts: "ppo.pt" (in-process: policy and critic weights with their AdamW
    states) or "policy.safetensors" (Ray: the last synced policy weights), and "episodes"."""
    import io

    import torch

    parts = {"episodes": str(episodes).encode()}
    if hasattr(runtime, "engines"):  # Ray: the weights the engines serve; optimiser state stays in the actors
        if runtime.last_weights is not None:
            parts["policy.safetensors"] = runtime.last_weights
        return parts
    buf = io.BytesIO()
    state = {"policy": runtime.policy.model.state_dict(), "policy_opt": runtime.policy.trainable.optimizer.state_dict()}
    if runtime.critic is not None:
        state.update(critic=runtime.critic.model.state_dict(), critic_opt=runtime.critic.trainable.optimizer.state_dict())
    torch.save(state, buf)
    parts["ppo.pt"] = buf.getvalue()
    return parts


def load_runtime_state(runtime, parts: dict[str, bytes]) -> int:
    """Put a ``runtime_state`` checkpoint back into a started runtime; the episodes it had done."""
    import io

    import torch

    if hasattr(runtime, "engines"):
        data = parts.get("policy.safetensors")
        if data is not None:
            import ray

            ref = ray.put(data)
            ray.get([runtime.policy.load_bytes.remote(ref)] + [e.load.remote(ref) for e in runtime.engines])
            runtime.last_weights = data
    elif "ppo.pt" in parts:
        state = torch.load(io.BytesIO(parts["ppo.pt"]), weights_only=True)
        runtime.policy.model.load_state_dict(state["policy"])
        runtime.policy.trainable.optimizer.load_state_dict(state["policy_opt"])
        if runtime.generator is not None:  # its bf16 sampling copy follows the restored policy
            runtime.generator.refresh()
        if runtime.critic is not None and "critic" in state:
            runtime.critic.model.load_state_dict(state["critic"])
            runtime.critic.trainable.optimizer.load_state_dict(state["critic_opt"])
    return int(parts.get("episodes", b"0"))


def _ppo_dir(run_dir: str) -> Path:
    from pzstream.stream.checkpoint import checkpoint_root

    return checkpoint_root(Path(run_dir)) / "ppo"


def _resume(runtime, cfg: Config, run_dir: str) -> tuple[int, str]:
    """Load the newest PPO checkpoint of the run, if checkpoints are on and one exists: (episodes, note)."""
    from pzstream.stream.checkpoint import complete_steps, read_checkpoint

    directory = _ppo_dir(run_dir)
    if not cfg.checkpoint.enabled or not complete_steps(directory):
        return 0, ""
    ckpt = read_checkpoint(directory, fallback_on_corrupt=True)
    episodes = load_runtime_state(runtime, ckpt.parts)
    return episodes, f"; resumed from PPO checkpoint {ckpt.step} ({episodes} episodes trained)"


def _save(runtime, cfg: Config, run_dir: str, step: int, episodes: int) -> None:
    import time

    from pzstream.stream.checkpoint import prune_checkpoints, write_checkpoint

    t0 = time.monotonic()
    parts = runtime_state(runtime, episodes)
    write_checkpoint(_ppo_dir(run_dir), step, parts, {"episodes": episodes})
    prune_checkpoints(_ppo_dir(run_dir), cfg.checkpoint.keep)
    log.info("PPO checkpoint %d written in %.2fs (%d episodes, %.1f MB)", step, time.monotonic() - t0, episodes,
             sum(map(len, parts.values())) / 1e6)


def _exit_on_term(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through ``finally``: Ray's actors and processes are shut down


def _shutdown(runtime: object) -> None:
    try:
        if runtime is not None:
            runtime.close()
        elif "ray" in sys.modules and sys.modules["ray"].is_initialized():  # stopped while starting up
            sys.modules["ray"].shutdown()
    except Exception:  # noqa: BLE001 - shutting down anyway
        log.warning("PPO runtime did not close cleanly", exc_info=True)


def run_worker(cfg_json: str, inbox: str, outbox: str, run_dir: str, logs_in: str | None) -> None:
    """Process entry point."""
    import torch

    signal.signal(signal.SIGTERM, _exit_on_term)
    die_with_parent()  # SIGTERM when the hub's process ends, even by kill -9: Ray and its engines go too

    from pzstream.llm.factory import prompt_config
    from pzstream.llm.tiny import resolve_model
    from pzstream.stream.logstream import setup_helper_logging
    from pzstream.orz.runtime import make_runtime

    cfg = Config.model_validate_json(cfg_json)
    setup_helper_logging("ppo", "orz", cfg.run.log_level, logs_in)
    torch.set_num_threads(max(1, cfg.trainer.threads))
    channel = HelperChannel(inbox, outbox, linger_ms=5000)
    pc = cfg.ppo
    prior_prompt = prompt_config(cfg.llm)  # choice mode trains the collectors' prior on its own prompts
    runtime = None
    parent = os.getppid()
    try:
        try:
            runtime = make_runtime(pc, resolve_model(cfg.llm.model))
            wm_value = None
            if pc.progress_value_weight > 0 and any(x.name == "progress" for x in parse_reward_specs(pc.rewards)):
                wm_value = WorldModelValue(cfg, Path(run_dir) / "weights")
            reward_fn, _ = build_reward_fn(pc, cfg.env.games_dir, cfg.env.cache_dir, wm_value)
            episodes, resumed = _resume(runtime, cfg, run_dir)
        except Exception as e:  # noqa: BLE001 - reported to the hub, which logs and counts it
            log.error("PPO runtime failed to start:\n%s", traceback.format_exc())
            channel.send(WorkerFatal(error=f"{type(e).__name__}: {e}"))
            return
        saved = episodes
        log.info("PPO runtime %s ready: %s%s", runtime.name, runtime.describe, resumed)
        channel.send(WorkerReady(runtime=runtime.name, describe=runtime.describe + resumed))
        while True:
            req = channel.receive() if channel.wait(1000) else None
            if req is None:
                if os.getppid() != parent:
                    log.warning("hub process is gone; PPO worker exits")
                    return
                continue
            if isinstance(req, Stop):
                return
            if isinstance(req, SaveCheckpoint):
                if episodes != saved:  # the policy changed since the last save
                    try:
                        _save(runtime, cfg, run_dir, req.step, episodes)
                        saved = episodes
                    except OSError as e:  # a full disk: keep training, try again at the next request
                        log.error("PPO checkpoint %d failed: %s", req.step, e)
                continue
            if not isinstance(req, EpisodeRequest):
                log.error("PPO worker got an unexpected %s", type(req).__name__)
                continue
            k = req.episode
            try:
                if wm_value is not None:
                    wm_value.refresh()
                samples = [PromptSample.from_dict(d) for d in req.samples]
                episode_reward = failing_reward(k) if k in pc.fail_episodes else reward_fn  # a testing aid
                result = run_episode(runtime, samples, pc, episode_reward, history_len=cfg.llm.history_len,
                                     seed=pc.seed + 1000 * k, prior_prompt=prior_prompt,
                                     list_candidates=cfg.llm.list_candidates)
            except Exception as e:  # noqa: BLE001 - isolation: the episode fails, the worker lives on
                tb = traceback.format_exc()
                log.error("PPO episode %d failed: %s\n%s", k, e, tb)
                channel.send(EpisodeResult(episode=k, ok=False, error=f"{type(e).__name__}: {e}", traceback=tb[-4000:]))
                continue
            episodes += 1
            channel.send(EpisodeResult(episode=k, ok=True, metrics=result.metrics, games=result.games,
                                       rewards=result.rewards, payload=result.weights))
    finally:
        _shutdown(runtime)
        channel.close()


def start_worker(cfg: Config, inbox: str, outbox: str, run_dir: Path, logs_in: str | None) -> mp.process.BaseProcess:
    # not a daemon: Ray and vLLM start processes of their own, which daemonic processes may not
    proc = mp.get_context("spawn").Process(target=run_worker, name="pzstream-ppo",
                                           args=(cfg.model_dump_json(), inbox, outbox, str(run_dir), logs_in))
    proc.start()
    return proc
