"""pzstream: PriorZero with ORZ-style LLM training as an asynchronous actor-learner system."""

__version__ = "0.1.0"
