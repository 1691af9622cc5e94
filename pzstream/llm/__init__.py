"""LLM package: tiny model, prompts, prior scoring, backends. Keep imports light."""
