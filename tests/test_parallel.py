"""Data-parallel training on 2 CPU processes (gloo): the PPO update under DeepSpeed ZeRO-2 and
ZeRO-3 and the world model under DDP give the losses of one process on the same global batches
(the multi-GPU path of issue 6, with nccl in place of gloo)."""
from __future__ import annotations

import pytest
import torch

from pzstream.parallel import launch, parser

pytestmark = pytest.mark.slow  # 2-process gloo jobs under DeepSpeed and DDP


def _run(*argv: str):
    return launch(parser().parse_args([*argv, "--device", "cpu", "--steps", "2", "--global-batch", "16"]))


@pytest.mark.parametrize("stage, tol", [("2", 1e-4), ("3", 1e-4)])
def test_ppo_update_under_deepspeed_zero_matches_one_process(stage, tol):
    one = _run("ppo", "--nproc", "1", "--zero-stage", stage, "--micro-batch", "4")
    two = _run("ppo", "--nproc", "2", "--zero-stage", stage, "--micro-batch", "4")
    assert len(one.losses) == len(two.losses) == 2
    assert two.losses == pytest.approx(one.losses, rel=tol, abs=1e-6)
    assert two.samples_per_s > 0 and two.tokens_per_s > 0
    assert one.losses[0] != one.losses[1]  # the weights moved between steps


def test_world_model_under_ddp_matches_one_process():
    one = _run("wm", "--nproc", "1")
    two = _run("wm", "--nproc", "2")
    # per-rank means over masked steps weight windows slightly differently from one global mean
    assert two.losses == pytest.approx(one.losses, rel=1e-2)
    assert one.losses[0] != one.losses[1]


def test_a_batch_that_does_not_split_is_refused():
    with pytest.raises(Exception):
        launch(parser().parse_args(["ppo", "--nproc", "2", "--device", "cpu", "--steps", "1", "--global-batch", "12",
                                    "--micro-batch", "4"]))


ZERO3_LOGPROBS = """
import os, torch
from pzstream.llm.logprobs import pack, token_logprobs
from pzstream.llm.tiny import resolve_model
from pzstream.orz.models import PolicyModel, free_port
from pzstream.parallel import ppo_batch
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
policy = PolicyModel(resolve_model("tiny"), 1e-4, "deepspeed", 3, micro_batch=4, accumulation=1)
seqs, _ = ppo_batch(policy.tokenizer, 4, 1, 256)
pk = pack(seqs, policy.pad_id)
with torch.no_grad():
    whole = (policy._z3)(input_ids=pk.input_ids, attention_mask=pk.attention_mask).logits
    idx = pk.gather_pos.unsqueeze(-1).expand(-1, -1, whole.shape[-1])
    lp = torch.log_softmax(torch.gather(whole, 1, idx).float(), -1)
    engine_path = torch.gather(lp, 2, pk.response_ids.unsqueeze(-1)).squeeze(-1) * pk.mask
    parts_path = token_logprobs(policy.model, pk, policy._z3)
print("MAXDIFF", float((engine_path - parts_path).abs().max()), int(pk.mask.sum()))
"""


def test_zero3_logprobs_at_answer_positions_only_equal_the_engines_whole_forward():
    """Under ZeRO-3 the engine's forward computes logits at the answer positions only
    (``logits_to_keep``; the full vocabulary at every position made ZeRO-3 3.3x slower, issue 13)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", ZERO3_LOGPROBS], capture_output=True, text=True, timeout=600)
    line = [x for x in out.stdout.splitlines() if x.startswith("MAXDIFF")]
    assert out.returncode == 0 and line, out.stderr[-2000:]
    diff, tokens = line[0].split()[1:]
    assert float(diff) <= 1e-5 and int(tokens) > 0


def test_compile_blocks_finds_the_decoder_layers_and_leaves_a_cpu_model_eager():
    """--compile / ppo.compile: the repeated blocks are found by name; on a CPU nothing is compiled."""
    from transformers import AutoModelForCausalLM

    from pzstream.compiled import compile_blocks, decoder_layers
    from pzstream.llm.tiny import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    layers = decoder_layers(model)
    assert len(layers) == model.config.num_hidden_layers
    assert compile_blocks(layers, "cpu") == 0
    assert getattr(layers[0], "_compiled_call_impl", None) is None  # still the eager module
    with pytest.raises(ValueError, match="no ModuleList of decoder layers"):
        decoder_layers(torch.nn.Linear(2, 2))


def test_a_block_whose_compile_fails_runs_eagerly_from_then_on(caplog):
    """No C compiler for Triton (or an op inductor cannot take): logged once, the training step goes on."""
    from torch._dynamo.exc import BackendCompilerFailed

    from pzstream.compiled import _dispatch

    calls = {"compiled": 0, "eager": 0}

    def eager(x):
        calls["eager"] += 1
        return x * 2

    def broken(x):
        calls["compiled"] += 1
        raise BackendCompilerFailed(eager, RuntimeError("Failed to find C compiler"), None)

    forward = _dispatch(eager, broken, scoring=False)
    x = torch.ones(3, requires_grad=True)
    assert torch.equal(forward(x), x * 2) and torch.equal(forward(x), x * 2)
    assert calls == {"compiled": 1, "eager": 2}  # tried once, then eager
    assert sum("runs eagerly" in r.message for r in caplog.records) == 1
    with torch.no_grad():  # forward-only passes never use the compiled one
        forward(x)
    assert calls["compiled"] == 1


def test_a_scoring_block_runs_compiled_without_gradients_and_a_training_block_does_not():
    """llm.compile: the prior's forward-only passes take the compiled forward; PPO's blocks keep eager there."""
    from pzstream.compiled import _dispatch

    used: list[str] = []

    def eager(x):
        used.append("eager")
        return x + 1

    def compiled(x):
        used.append("compiled")
        return x + 1

    scoring, training = _dispatch(eager, compiled, scoring=True), _dispatch(eager, compiled, scoring=False)
    with torch.no_grad():
        assert torch.equal(scoring(torch.zeros(2)), torch.ones(2))
        assert torch.equal(training(torch.zeros(2)), torch.ones(2))
    assert used == ["compiled", "eager"]
