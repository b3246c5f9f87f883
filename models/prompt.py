"""The prompt enhancer: an instruct LM rewrites the user's prompt, the motion context (the
driver's action phrase and intensity) is appended in the curated captions' words, and the
camera moves the prompt asks for become per-frame camera parameters.

The rewrite needs only the user's words, so serving runs it beside motion extraction rather
than after it (`rewrite`, then `motion_caption` once the action phrase is known): the LM's
0.8-1.4 s no longer add to a request's latency. The DiT reads the action phrase through its
own cross-attention as well, so the caption's motion words are a template, as in training.

The LM is SmolLM2-135M-Instruct from the offline GGUF (`models.assets.smollm2_gguf`), run
natively by llama.cpp (`llama-cpp-python`) with greedy decoding (deterministic) and a bounded
number of new tokens, stopped at the end of its first sentence. On one core here it loads in
0.45 s and rewrites a prompt in 0.8–0.95 s (six prompts, 13–19 words; 1.4 s when it decoded
on to the 48-token budget, as it nearly always did); transformers, which dequantised the GGUF
to fp32, took 46 s to load and 4–9 s for the same prompts and gave the same text.
When it cannot be loaded or its answer is unusable (empty, cut off, a refusal, too long),
the enhancer falls back to a plain template built from the same context, so a request never
fails because of the LM. Camera moves are read from the user's words by rules (a 135M
model does not produce reliable structured output) and turned into a per-frame (pan_x,
pan_y, zoom) path with the vocabulary of the synthetic camera (`models.synthetic.camera`).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import InvalidInput
from models.synthetic.camera import MOVES, CameraPath

log = logging.getLogger(__name__)

# Greedy SmolLM2-135M loops on some prompts ("… a small island, a small island, …" until the
# token budget, then the answer is cut and the template is served). A penalty on tokens
# already in the context breaks those loops: on five prompts tried, 1.0 looped on one and
# repeated words on two; 1.3 gave five complete sentences of 9-21 tokens.
REPEAT_PENALTY = 1.3

SYSTEM = ("You write prompts for a video generator. Rewrite the user's prompt as one vivid "
          "sentence about the character, their motion and the scene. Keep every detail the "
          "user gave, add no new people, and answer with the sentence only.")

# Words that name a camera move, most specific first ("zoom in" before "zoom").
CAMERA_PATTERNS = (
    ("zoom_in", r"\b(zoom(s|ing|ed)?\s+in|push(es|ing)?\s+in|dolly\s+in|close[- ]?up)\b"),
    ("zoom_out", r"\b(zoom(s|ing|ed)?\s+out|pull(s|ing)?\s+(back|out)|dolly\s+out)\b"),
    ("pan_left", r"\b(pan(s|ning|ned)?|track(s|ing)?|truck(s|ing)?)\s+(to\s+the\s+)?left\b"),
    ("pan_right", r"\b(pan(s|ning|ned)?|track(s|ing)?|truck(s|ing)?)\s+(to\s+the\s+)?right\b"),
    ("tilt_up", r"\b(tilt(s|ing|ed)?|crane(s|ing)?)\s+up(wards?)?\b"),
    ("tilt_down", r"\b(tilt(s|ing|ed)?|crane(s|ing)?)\s+down(wards?)?\b"),
)


@dataclass(frozen=True)
class EnhancedPrompt:
    text: str  # the rewritten prompt (rewrite) or the caption the DiT reads (enhance)
    camera_move: str  # a key of models.synthetic.camera.MOVES
    source: str  # "lm", "empty prompt" or "fallback" (and why)


def camera_move(prompt: str) -> str:
    """The first camera move the prompt names ("static" when none)."""
    found = [(m.start(), move) for move, pattern in CAMERA_PATTERNS
             if (m := re.search(pattern, prompt, re.IGNORECASE))]
    return min(found)[1] if found else "static"


def camera_path(move: str, frames: int) -> np.ndarray:
    """(frames, 3) float32 pan_x, pan_y, zoom from the neutral framing to the move's end."""
    if move not in MOVES:
        raise InvalidInput(f"unknown camera move {move!r}; known: {sorted(MOVES)}")
    path = CameraPath.linear(frames, MOVES["static"], MOVES[move], move=move)
    return np.stack([path.pan_x, path.pan_y, path.zoom], -1).astype(np.float32)


def motion_caption(prompt: str, action_phrase: str, intensity: float) -> str:
    """The caption the DiT reads: the (rewritten) prompt with the motion context appended."""
    prompt = " ".join(prompt.split()).rstrip(".")
    motion = f"a person {action_phrase}, {intensity_words(intensity)} motion"
    return f"{prompt}; {motion}" if prompt else motion


def intensity_words(intensity: float, low: float = 0.002, high: float = 0.02) -> str:
    return "subtle" if intensity < low else "strong" if intensity > high else "moderate"


def _ends_sentence(text: str) -> bool:
    """The text, quotes and brackets aside, ends with a sentence's final mark."""
    return text.rstrip().rstrip('"\')\u201d').endswith((".", "!", "?"))


class PromptEnhancer:
    """`rewrite(prompt)` -> EnhancedPrompt (the LM's sentence, or the prompt itself);
    `enhance(prompt, action_phrase, intensity)` -> the caption. Thread-safe."""

    def __init__(self, gguf: str | Path | None = None, *, max_new_tokens: int = 48,
                 max_words: int = 60, threads: int = 1, load: bool = True,
                 cache_size: int = 256):
        self.gguf = Path(gguf) if gguf is not None else None
        self.max_new_tokens, self.max_words = max_new_tokens, max_words
        # A server runs many instances on few cores: one thread each, like its torch stages
        # (llama.cpp's idle OpenMP threads spin and take cores from the other stages).
        self.threads = threads
        self.model = None
        self.load_error = ""
        self._lock = threading.Lock()  # one llama.cpp context decodes one prompt at a time
        # Greedy decoding is deterministic, so a prompt seen before is answered from memory:
        # clients re-run a prompt with other clips and seeds, and a request that fails in
        # motion extraction has already started its rewrite.
        self.rewrite = functools.lru_cache(maxsize=cache_size)(self._rewrite_prompt)
        if load:
            self._load()

    def _load(self) -> None:
        try:
            from llama_cpp import Llama

            from models.assets import smollm2_gguf

            path = self.gguf or smollm2_gguf()
            if not path.is_file():
                raise FileNotFoundError(f"no GGUF at {path}")
            # the prompt and the answer fit in 512 tokens; the chat template is the GGUF's own
            # n_threads_batch too: it defaults to every core, and the prompt's batch then
            # spun on the cores motion extraction was using
            self.model = Llama(model_path=str(path), n_ctx=512, n_threads=self.threads,
                               n_threads_batch=self.threads, seed=0, verbose=False)
        except Exception as exc:  # noqa: BLE001 - any failure means: serve the fallback
            self.model = None
            self.load_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("prompt enhancer LM not loaded, using the plain fallback: %s",
                        self.load_error)

    def _rewrite_prompt(self, prompt: str) -> EnhancedPrompt:
        """`rewrite` (cached): the user's prompt as one vivid sentence; the prompt itself
        (whitespace tidied) when it is empty, the LM is missing or its answer is unusable."""
        move = camera_move(prompt)
        plain = " ".join(prompt.split())
        if not plain:
            return EnhancedPrompt("", move, "empty prompt")
        if self.model is None:
            return EnhancedPrompt(plain, move, f"fallback ({self.load_error or 'no LM'})")
        try:
            text = self._generate(plain)
        except Exception as exc:  # noqa: BLE001 - a failed generation must not fail the request
            return EnhancedPrompt(plain, move, f"fallback ({type(exc).__name__})")
        problem = self._unusable(text)
        if problem:
            return EnhancedPrompt(plain, move, f"fallback ({problem})")
        return EnhancedPrompt(text, move, "lm")

    def enhance(self, prompt: str, action_phrase: str, intensity: float) -> EnhancedPrompt:
        """`rewrite` and `motion_caption` in one call, for callers that know the motion."""
        rewritten = self.rewrite(prompt)
        return EnhancedPrompt(motion_caption(rewritten.text, action_phrase, intensity),
                              rewritten.camera_move, rewritten.source)

    def _generate(self, prompt: str) -> str:
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Prompt: {prompt}"}]
        text, finished = "", False
        with self._lock:
            self.model.reset()  # no state carried over from the previous prompt
            chunks = self.model.create_chat_completion(
                messages, max_tokens=self.max_new_tokens, temperature=0.0,  # 0: greedy
                repeat_penalty=REPEAT_PENALTY, stream=True)
            for chunk in chunks:
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content") or ""
                # The answer is one sentence: stop at its end instead of decoding the LM's
                # next ones up to the token budget (it rarely stops by itself; most of its
                # time went to sentences that were then cut off)
                if _ends_sentence(text) and piece[:1].isspace():
                    finished = True
                    break
                text += piece
                finished = choice.get("finish_reason") == "stop"
            chunks.close()  # stops the decoding when we broke out early
        text = " ".join(text.split()).strip('"')
        if not finished:  # cut off by the budget: keep the complete sentences, if any
            end = max(text.rfind(c) for c in ".!?")
            text = text[:end + 1] if end > 0 else ""
        return text

    def _unusable(self, text: str) -> str:
        if len(text.split()) < 3:
            return "empty answer"
        if len(text.split()) > self.max_words:
            return "answer too long"
        if re.search(r"\b(I can't|I cannot|I'm sorry|as an AI)\b", text, re.IGNORECASE):
            return "refusal"
        if repeats(text):
            return "repetitive answer"
        return ""


def repeats(text: str, n: int = 3, times: int = 3) -> bool:
    """Whether some run of `n` words comes back `times` times: a decoding loop."""
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return any(grams.count(g) >= times for g in set(grams))
