"""Text -> vector for observations and candidate actions.

"hashed": lowercase word unigrams and bigrams hashed (crc32, stable across
processes, unlike Python's salted hash()) into `hash_buckets` rows of a
trainable EmbeddingBag, summed with weight 1/sqrt(n) so long and short texts
land at similar scales.  "minilm": a frozen all-MiniLM-L6-v2 sentence encoder,
only if sentence-transformers is installed; its weights are kept out of the
module's state_dict (they are fixed, and shipping them with every weights
update would be wasteful).
"""
from __future__ import annotations

import re
import zlib

import torch
import torch.nn as nn

from .config import WorldModelConfig

_WORD = re.compile(r"[a-z0-9]+")
_CACHE_LIMIT = 200_000  # texts repeat a lot in one game; forget everything when this many are cached
_CACHE_BYTES = 64 << 20  # ... or when the cached texts and their values hold about this many bytes
# Frozen sentence encoders by name, shared by every TextEncoder (and by deep copies
# such as the trainer's target model) instead of being copied with the module.
_FROZEN: dict[str, object] = {}


def words(text: str, max_words: int) -> list[str]:
    """Lowercase alphanumeric words of `text`, at most `max_words`."""
    return _WORD.findall(text.lower())[:max_words]


def hashed_ids(text: str, buckets: int, max_words: int) -> list[int]:
    """Bucket ids of the unigrams and bigrams of `text` (deterministic; [] for no words)."""
    ws = words(text, max_words)
    grams = ["u " + w for w in ws] + ["b " + a + " " + b for a, b in zip(ws, ws[1:])]
    return [zlib.crc32(g.encode()) % buckets for g in grams]


class TextEncoder(nn.Module):
    """list[str] (n texts) -> float32 [n, out_dim]."""

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        self.kind, self.buckets, self.max_words = cfg.text_encoder, cfg.hash_buckets, cfg.max_words
        self._cache: dict[str, object] = {}
        self._cache_bytes = 0  # the cached texts' and values' approximate size
        if self.kind == "hashed":
            self.out_dim = cfg.text_dim
            self.bag = nn.EmbeddingBag(cfg.hash_buckets, cfg.text_dim, mode="sum")
            nn.init.normal_(self.bag.weight, std=1.0)
        elif self.kind == "minilm":
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise ImportError("text_encoder='minilm' needs the sentence-transformers package "
                                  "(and the all-MiniLM-L6-v2 weights available offline); use 'hashed'") from e
            if cfg.minilm_name not in _FROZEN:
                _FROZEN[cfg.minilm_name] = SentenceTransformer(cfg.minilm_name, device="cpu").eval().requires_grad_(False)
            self.minilm_name = cfg.minilm_name  # not a submodule: stays out of state_dict
            self.out_dim = _FROZEN[cfg.minilm_name].get_sentence_embedding_dimension()
        else:
            raise ValueError(f"unknown text_encoder {self.kind!r}")

    def _remember(self, text: str, value: object) -> None:
        """Cache ``value`` for ``text``; everything is forgotten first when the cache is full, in
        entries or in bytes (observations come from peers: their sizes are theirs to choose)."""
        size = len(text) + (value.numel() * value.element_size() if isinstance(value, torch.Tensor)
                            else 8 * len(value) if isinstance(value, list) else 0) + 100
        if len(self._cache) >= _CACHE_LIMIT or self._cache_bytes + size > _CACHE_BYTES:
            self._cache.clear()
            self._cache_bytes = 0
        self._cache[text] = value
        self._cache_bytes += size

    def forward(self, texts: list[str]) -> torch.Tensor:
        if self.kind == "minilm":
            return self._forward_minilm(texts)
        dev = self.bag.weight.device
        ids, offsets, weights = [], [], []
        for t in texts:
            got = self._cache.get(t)
            if got is None:
                got = hashed_ids(t, self.buckets, self.max_words)
                self._remember(t, got)
            offsets.append(len(ids))
            ids.extend(got)
            if got:  # an empty text is an empty bag: the zero vector
                weights.extend([len(got) ** -0.5] * len(got))
        return self.bag(torch.tensor(ids, dtype=torch.long, device=dev),
                        torch.tensor(offsets, dtype=torch.long, device=dev),
                        per_sample_weights=torch.tensor(weights, dtype=torch.float32, device=dev))

    @torch.no_grad()
    def _forward_minilm(self, texts: list[str]) -> torch.Tensor:
        local = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
        missing = [t for t in dict.fromkeys(texts) if t not in local]
        if missing:
            embs = _FROZEN[self.minilm_name].encode(missing, convert_to_tensor=True, show_progress_bar=False)
            for t, e in zip(missing, embs):
                local[t] = e.float().cpu()
                self._remember(t, local[t])
        return torch.stack([local[t] for t in texts])
