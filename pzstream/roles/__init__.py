"""The processes: collector, world-model trainer, PPO worker, prior server, evaluation."""
