"""Data-parallel training on 2 CPU processes (gloo): the PPO update under DeepSpeed ZeRO-2 and
ZeRO-3 and the world model under DDP give the losses of one process on the same global batches
(the multi-GPU path of issue 6, with nccl in place of gloo)."""
from __future__ import annotations

import pytest

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
