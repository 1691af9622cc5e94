"""ORZ-style PPO episodes (issue 5). So far: the episode's math as pure functions (ppo_math)."""
