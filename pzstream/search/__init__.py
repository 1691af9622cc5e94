"""MuZero-style tree search over a learned model, as a small pure function.

``run_search(root, recurrent_fn, legal, config, rng)`` searches B roots at once. It
never sees a game or a network: the model is reached only through ``recurrent_fn``
with opaque int64 handles naming model states, so the model adapter decides what a
handle means (a row of a latent table, a cache key, ...).

Semantics follow MuZero as implemented by LightZero's C++ tree (single player, pUCT
with min-max normalised Q, discounted backup, root Dirichlet noise); two backends,
"numpy" (ours) and "lightzero" (LightZero's compiled tree), give identical visit
counts on identical inputs.

Approximation for text games: a game only tells us the valid actions of the state we
are actually in, never of imagined states, so every node of a root's tree uses the
ROOT's candidate set (``legal`` [B, K]) for its children, and recurrent_fn's logits
are masked with it at every depth.
"""
from .lightzero_tree import lightzero_available
from .mixing import (MIX_MODES, entropy_llm_weight, priorzero_llm_weight, root_llm_weight,
                     softmax_masked)
from .search import mix_root_prior, run_search
from .types import RecurrentFn, RecurrentFnOutput, RootFnOutput, SearchConfig, SearchOutput

__all__ = [
    "MIX_MODES",
    "RecurrentFn",
    "RecurrentFnOutput",
    "RootFnOutput",
    "SearchConfig",
    "SearchOutput",
    "entropy_llm_weight",
    "lightzero_available",
    "mix_root_prior",
    "priorzero_llm_weight",
    "root_llm_weight",
    "run_search",
    "softmax_masked",
]
