"""Where a PPO episode's models live: in this process, or in Ray actors (vLLM + DeepSpeed).

Both runtimes offer the same calls, used by ``episode.run_episode``:

    rt.sample(prompt_ids, n, max_tokens, temperature, seed) -> responses   (free answers)
    rt.choice_logprobs(prompt_ids, choices) -> token log-probs of each allowed answer (choice mode)
    rt.forward(seqs) -> (old_logprobs, ref_logprobs | None, values | None)
    rt.train(seqs, old_logprobs, advantages, ref_logprobs, old_values, returns) -> metrics
    rt.sync() -> bytes        # policy weights into the rollout engines, in place; returned for publishing
    rt.greedy_pair(prompt_ids, max_tokens) -> (engine's greedy ids, policy's greedy ids)

``InProcessRuntime`` (name "inprocess"): transformers generation from the policy model itself,
torch AdamW. ``RayRuntime`` (name "ray+vllm+deepspeed"): one actor each for the policy
(DeepSpeed ZeRO), critic (DeepSpeed ZeRO), reference model, and ``vllm_num_engines`` vLLM
engines, in a placement group (one shared bundle with ``colocate_all``, else one bundle per
actor). The policy's weights reach the engines as a Ray object (no copy through the driver)
and are loaded in place by the engines' workers.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from pzstream.config import PPOSection
from pzstream.orz.models import CriticModel, PolicyModel, ReferenceModel, Seq
from pzstream.orz.rollout import GenerationCopy, transformers_sample

log = logging.getLogger("pzstream.orz")

REPO_ROOT = str(Path(__file__).resolve().parents[2])


def _accumulation(cfg: PPOSection, update_steps: int) -> int:
    return cfg.rollout_batch_size * cfg.n_samples_per_prompt // update_steps // cfg.micro_train_batch_size


def choice_logprobs_with(model: PolicyModel, prompt_ids, choices, micro: int) -> list:
    """Token log-probs of each allowed answer after its prompt, from a policy model."""
    seqs = [(list(p), list(c)) for p, cs in zip(prompt_ids, choices) for c in cs]
    rows = model.logprobs(seqs, micro).double().numpy()
    out, at = [], 0
    for cs in choices:
        out.append([rows[at + i, :len(c)] for i, c in enumerate(cs)])
        at += len(cs)
    return out


def ray_stack_available() -> tuple[bool, str]:
    """Whether ray, vllm and deepspeed import here (and why not)."""
    for name in ("ray", "vllm", "deepspeed"):
        try:
            __import__(name)
        except Exception as e:  # noqa: BLE001 - a broken install counts as absent
            return False, f"{name} does not import ({type(e).__name__}: {e})"
    return True, ""


def make_runtime(cfg: PPOSection, model_path: str) -> "InProcessRuntime | RayRuntime":
    """The runtime ``ppo.runtime`` names; ``auto`` takes Ray + vLLM + DeepSpeed where they import."""
    kind = cfg.runtime
    if kind in ("auto", "ray"):
        ok, why = ray_stack_available()
        if ok:
            return RayRuntime(cfg, model_path)
        if kind == "ray":
            raise RuntimeError(f"ppo.runtime=ray but {why}")
        log.warning("ppo.runtime=auto: %s; using the in-process runtime (transformers + torch)", why)
    return InProcessRuntime(cfg, model_path)


class InProcessRuntime:
    name = "inprocess"

    def __init__(self, cfg: PPOSection, model_path: str):
        self.cfg = cfg
        self.policy = PolicyModel(model_path, cfg.actor_learning_rate, "torch", micro_batch=cfg.micro_train_batch_size,
                                  accumulation=_accumulation(cfg, cfg.policy_update_steps), seed=cfg.seed,
                                  device=cfg.device)
        self.tokenizer = self.policy.tokenizer
        self.critic = None if cfg.use_grpo else CriticModel(
            model_path, cfg.critic_learning_rate, "torch", micro_batch=cfg.micro_train_batch_size,
            accumulation=_accumulation(cfg, cfg.critic_update_steps), seed=cfg.seed, pad_id=self.policy.pad_id,
            device=cfg.device)
        self.ref = ReferenceModel(model_path, cfg.device) if cfg.use_kl_loss else None
        # on a GPU a bf16 copy with a static cache samples (3.4x the fp32 policy, bench/generate.py)
        self.generator = GenerationCopy(self.policy.model) if cfg.device.startswith("cuda") else None
        compiled = 0
        if cfg.compile:  # after the generation copy is made: a copy of compiled layers would call the originals
            compiled = self.policy.compile() + (self.critic.compile() if self.critic is not None else 0)
        self.describe = (f"transformers generation{' (bf16 copy, static cache)' if self.generator else ''}, "
                         f"torch AdamW{f', {compiled} layers compiled' if compiled else ''}, in this process on {cfg.device}")

    def ensure_alive(self) -> None:
        pass

    def sample(self, prompt_ids: Sequence[list[int]], n: int, max_tokens: int, temperature: float,
               seed: int) -> list[list[list[int]]]:
        if self.generator is not None:
            return self.generator.sample(self.tokenizer, prompt_ids, n, max_tokens, temperature, seed)
        return transformers_sample(self.policy.model, self.tokenizer, prompt_ids, n, max_tokens, temperature, seed)

    def choice_logprobs(self, prompt_ids, choices) -> list:
        return choice_logprobs_with(self.policy, prompt_ids, choices, self.cfg.micro_forward_batch_size)

    def forward(self, seqs: Sequence[Seq]):
        m = self.cfg.micro_forward_batch_size
        old = self.policy.logprobs(seqs, m)
        ref = self.ref.logprobs(seqs, m) if self.ref is not None else None
        values = self.critic.values(seqs, m) if self.critic is not None else None
        return old, ref, values

    def train(self, seqs, old_logp, adv, ref_logp, old_values, returns) -> dict[str, float]:
        c = self.cfg
        metrics = self.policy.train(seqs, old_logp, adv, ref_logp, c.policy_update_steps, c.eps_clip, c.kl_loss_coef)
        if self.generator is not None:
            self.generator.refresh()
        if self.critic is not None:
            metrics.update(self.critic.train(seqs, old_values, returns, c.critic_update_steps, c.value_clip))
        return metrics

    def sync(self) -> bytes:
        return self.policy.state_bytes()  # the generator is the policy: nothing to copy

    def greedy_pair(self, prompt_ids, max_tokens: int):
        g = self.policy.greedy(prompt_ids, max_tokens)
        return g, g

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ Ray actors
# Plain classes, turned into Ray actors by RayRuntime (so importing this module needs no Ray).


class PolicyActor:
    def __init__(self, path: str, cfg_json: str):
        cfg = PPOSection.model_validate_json(cfg_json)
        torch.set_num_threads(1)
        self.policy = PolicyModel(path, cfg.actor_learning_rate, "deepspeed", cfg.zero_stage, cfg.micro_train_batch_size,
                                  _accumulation(cfg, cfg.policy_update_steps), cfg.seed)
        if cfg.compile:
            self.policy.compile()

    def ping(self) -> int:
        return os.getpid()

    def logprobs(self, seqs, micro: int):
        return self.policy.logprobs(seqs, micro)

    def train(self, seqs, old_logp, adv, ref_logp, steps: int, eps_clip: float, kl_coef: float):
        return self.policy.train(seqs, old_logp, adv, ref_logp, steps, eps_clip, kl_coef)

    def state_bytes(self) -> bytes:
        return self.policy.state_bytes()

    def load_bytes(self, data: bytes) -> None:
        from safetensors.torch import load

        state = load(bytes(data))
        self.policy.model.load_state_dict(state, strict=False)

    def greedy(self, prompt_ids, max_tokens: int):
        return self.policy.greedy(prompt_ids, max_tokens)


class CriticActor:
    def __init__(self, path: str, cfg_json: str, pad_id: int):
        cfg = PPOSection.model_validate_json(cfg_json)
        torch.set_num_threads(1)
        self.critic = CriticModel(path, cfg.critic_learning_rate, "deepspeed", cfg.zero_stage,
                                  cfg.micro_train_batch_size, _accumulation(cfg, cfg.critic_update_steps), cfg.seed, pad_id)
        if cfg.compile:
            self.critic.compile()

    def ping(self) -> int:
        return os.getpid()

    def values(self, seqs, micro: int):
        return self.critic.values(seqs, micro)

    def train(self, seqs, old_values, returns, steps: int, value_clip: float):
        return self.critic.train(seqs, old_values, returns, steps, value_clip)


class RefActor:
    def __init__(self, path: str):
        torch.set_num_threads(1)
        self.ref = ReferenceModel(path, "cuda" if torch.cuda.is_available() else "cpu")

    def ping(self) -> int:
        return os.getpid()

    def logprobs(self, seqs, micro: int):
        return self.ref.logprobs(seqs, micro)


class EngineActor:
    """A vLLM engine for rollouts; weights are replaced in place (``VLLMBackend``'s reload)."""

    def __init__(self, path: str):
        from pzstream.llm.vllm_backend import VLLMBackend

        self.backend = VLLMBackend(model=path, device="cuda" if torch.cuda.is_available() else "cpu")

    def ping(self) -> int:
        return os.getpid()

    def sample(self, prompt_ids, n, max_tokens, temperature):
        from pzstream.orz.rollout import vllm_sample

        return vllm_sample(self.backend.llm, prompt_ids, n, max_tokens, temperature)

    def choice_logprobs(self, prompt_ids, choices):
        from pzstream.orz.rollout import vllm_choice_logprobs

        return vllm_choice_logprobs(self.backend.llm, prompt_ids, choices)

    def load(self, data: bytes) -> int:
        self.backend.load_state_dict_bytes(data)
        return self.backend.version

    def greedy(self, prompt_ids, max_tokens: int):
        from pzstream.orz.rollout import vllm_greedy

        return vllm_greedy(self.backend.llm, prompt_ids, max_tokens)

    def shutdown(self) -> None:
        self.backend.close()


class RayRuntime:
    name = "ray+vllm+deepspeed"

    def __init__(self, cfg: PPOSection, model_path: str):
        import ray
        from transformers import AutoTokenizer

        self.cfg = cfg
        self.path = model_path
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self._owns_ray = False
        if not ray.is_initialized():
            env = {"PYTHONPATH": os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH", "")) if p),
                   "VLLM_ALLOW_INSECURE_SERIALIZATION": "1", "TOKENIZERS_PARALLELISM": "false"}
            kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=True, runtime_env={"env_vars": env},
                                      logging_level=logging.WARNING)
            if cfg.ray_address:
                kw["address"] = cfg.ray_address
            elif cfg.ray_num_cpus:
                kw["num_cpus"] = cfg.ray_num_cpus
            # Ray starts its workers at nice 15: beside busy collectors and the world-model trainer
            # they would starve (seen: actors still not up after 4 minutes on 2 cores)
            os.environ.setdefault("RAY_worker_niceness", "0")
            t0 = time.monotonic()
            ray.init(**kw)
            self._owns_ray = True
            log.info("ray up in %.1fs: %s", time.monotonic() - t0, ray.cluster_resources())
        self.last_weights: bytes | None = None  # the last synced policy, to restore restarted actors
        self.restarts = 0
        self._start()
        self.describe = (f"Ray actors: policy{'' if cfg.use_grpo else ' + critic'} (DeepSpeed ZeRO-{cfg.zero_stage})"
                         f"{', reference' if cfg.use_kl_loss else ''}, {cfg.vllm_num_engines} vLLM engine(s), "
                         f"{'colocated' if cfg.colocate_all else 'one bundle each'}")

    def _start(self) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        cfg = self.cfg
        gpu = 1 if torch.cuda.is_available() else 0
        roles = ["policy"] + ([] if cfg.use_grpo else ["critic"]) + (["ref"] if cfg.use_kl_loss else []) + \
            [f"engine{i}" for i in range(cfg.vllm_num_engines)]
        # CPU shares are nominal (the actors mostly take turns); they only have to fit the bundles
        share = 0.1
        if cfg.colocate_all:
            bundles = [{"CPU": share * len(roles), **({"GPU": 1} if gpu else {})}]
            where = {r: 0 for r in roles}
            per_actor = {"num_cpus": share, "num_gpus": (1.0 / len(roles)) if gpu else 0}
        else:
            bundles = [{"CPU": share, **({"GPU": 1} if gpu else {})} for _ in roles]
            where = {r: i for i, r in enumerate(roles)}
            per_actor = {"num_cpus": share, "num_gpus": 1 if gpu else 0}
        self.pg = placement_group(bundles, strategy="PACK")
        ray.get(self.pg.ready(), timeout=120)

        def spawn(cls, role, *args):
            strategy = PlacementGroupSchedulingStrategy(placement_group=self.pg,
                                                        placement_group_bundle_index=where[role])
            return ray.remote(cls).options(scheduling_strategy=strategy, max_concurrency=1, **per_actor).remote(*args)

        cfg_json = cfg.model_dump_json()
        self.policy = spawn(PolicyActor, "policy", self.path, cfg_json)
        self.critic = spawn(CriticActor, "critic", self.path, cfg_json, self.pad_id) if "critic" in roles else None
        self.ref = spawn(RefActor, "ref", self.path) if "ref" in roles else None
        self.engines = [spawn(EngineActor, f"engine{i}", self.path) for i in range(cfg.vllm_num_engines)]
        t0 = time.monotonic()
        ray.get([a.ping.remote() for a in self._actors()], timeout=600)
        log.info("PPO actors up in %.1fs (%s)", time.monotonic() - t0, ", ".join(roles))
        if self.last_weights is not None:  # a restart: continue from the last synced policy
            ref = ray.put(self.last_weights)
            ray.get([self.policy.load_bytes.remote(ref)] + [e.load.remote(ref) for e in self.engines])

    def _actors(self) -> list:
        return [a for a in (self.policy, self.critic, self.ref, *self.engines) if a is not None]

    def ensure_alive(self) -> None:
        """Restart all actors if any died (after a failed episode)."""
        import ray

        try:
            ray.get([a.ping.remote() for a in self._actors()], timeout=60)
            return
        except Exception as e:  # noqa: BLE001 - any actor failure means: rebuild
            log.warning("PPO actors unhealthy (%s); restarting them", type(e).__name__)
        self._stop_actors()
        self.restarts += 1
        self._start()

    def _spread(self, prompt_ids, call) -> list:
        """Prompts dealt round-robin to the engines; results back in prompt order."""
        import ray

        k = len(self.engines)
        parts = [p for p in (list(range(i, len(prompt_ids), k)) for i in range(k)) if p]
        futures = [call(self.engines[i], idx) for i, idx in enumerate(parts)]
        out: list = [None] * len(prompt_ids)
        for idx, res in zip(parts, ray.get(futures)):
            for j, r in zip(idx, res):
                out[j] = r
        return out

    def sample(self, prompt_ids, n, max_tokens, temperature, seed):
        return self._spread(prompt_ids, lambda e, idx: e.sample.remote([prompt_ids[j] for j in idx], n, max_tokens,
                                                                       temperature))

    def choice_logprobs(self, prompt_ids, choices):
        return self._spread(prompt_ids, lambda e, idx: e.choice_logprobs.remote([prompt_ids[j] for j in idx],
                                                                                [choices[j] for j in idx]))

    def forward(self, seqs):
        import ray

        m = self.cfg.micro_forward_batch_size
        ref_seqs = ray.put(list(seqs))
        futs = [self.policy.logprobs.remote(ref_seqs, m),
                self.ref.logprobs.remote(ref_seqs, m) if self.ref is not None else None,
                self.critic.values.remote(ref_seqs, m) if self.critic is not None else None]
        got = ray.get([f for f in futs if f is not None])
        it = iter(got)
        return tuple(next(it) if f is not None else None for f in futs)

    def train(self, seqs, old_logp, adv, ref_logp, old_values, returns) -> dict[str, float]:
        import ray

        c = self.cfg
        ref_seqs = ray.put(list(seqs))
        futs = [self.policy.train.remote(ref_seqs, old_logp, adv, ref_logp, c.policy_update_steps, c.eps_clip,
                                         c.kl_loss_coef)]
        if self.critic is not None:
            futs.append(self.critic.train.remote(ref_seqs, old_values, returns, c.critic_update_steps, c.value_clip))
        metrics: dict[str, float] = {}
        for m in ray.get(futs):
            metrics.update(m)
        return metrics

    def sync(self) -> bytes:
        import ray

        data_ref = self.policy.state_bytes.remote()
        ray.get([e.load.remote(data_ref) for e in self.engines])
        self.last_weights = ray.get(data_ref)
        return self.last_weights

    def greedy_pair(self, prompt_ids, max_tokens: int):
        import ray

        return tuple(ray.get([self.engines[0].greedy.remote(prompt_ids, max_tokens),
                              self.policy.greedy.remote(prompt_ids, max_tokens)]))

    def _stop_actors(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for e in getattr(self, "engines", []):
            try:
                ray.get(e.shutdown.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead engine has nothing to shut down
                pass
        for a in self._actors():
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        try:
            remove_placement_group(self.pg)
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        import ray

        self._stop_actors()
        if self._owns_ray:
            ray.shutdown()
