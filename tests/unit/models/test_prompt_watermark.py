"""The prompt enhancer (real SmolLM2 from the offline GGUF, and its fallback) and the
invisible watermark with provenance tags, through a real H.264 encode."""

import json
import re

import cv2
import numpy as np
import pytest

from models.assets import sample_data
from models.extraction import square
from models.prompt import (
    EnhancedPrompt,
    PromptEnhancer,
    _ends_sentence,
    camera_move,
    camera_path,
    repeats,
)
from models.video import encode_mp4, read_image, read_mp4_metadata, read_video
from models.watermark import detect, embed, provenance_of, provenance_tags, servable_frames


@pytest.mark.parametrize("prompt, move", [
    ("a knight dancing, the camera pans left", "pan_left"),
    ("slow zoom in on her face", "zoom_in"),
    ("Camera tilting up as he jumps, then zoom out", "tilt_up"),  # the first move named
    ("a robot waving on a beach", "static"),
])
def test_camera_moves_are_read_from_the_prompt(prompt, move):
    assert camera_move(prompt) == move


def test_camera_path_ramps_from_neutral_to_the_move():
    path = camera_path("pan_right", 9)
    assert path.shape == (9, 3) and path.dtype == np.float32
    assert path[0].tolist() == [0.0, 0.0, 1.0] and path[-1, 0] == pytest.approx(0.25)


@pytest.fixture(scope="module")
def enhancer():
    return PromptEnhancer(max_new_tokens=40)


def test_the_lm_rewrites_deterministically_with_the_motion_context(enhancer):
    assert enhancer.model is not None, enhancer.load_error
    first = enhancer.enhance("a knight on a beach, camera pans left", "waving the right hand",
                             0.01)
    again = enhancer.enhance("a knight on a beach, camera pans left", "waving the right hand",
                             0.01)
    assert first == again and first.source == "lm", first
    assert 3 <= len(first.text.split()) <= 60 and first.camera_move == "pan_left"
    # the LM rewrites the user's words only (serving runs it beside motion extraction); the
    # motion context is appended in the curated captions' words
    rewritten = enhancer.rewrite("a knight on a beach, camera pans left")
    assert first.text == f"{rewritten.text.rstrip('.')}; a person waving the right hand, " \
                         "moderate motion"


def test_an_empty_prompt_needs_no_lm(enhancer):
    out = enhancer.rewrite("  \n ")
    assert out == EnhancedPrompt("", "static", "empty prompt")
    assert enhancer.enhance("", "walking", 0.001).text == "a person walking, subtle motion"


def test_a_prompt_that_made_the_lm_loop_now_gets_a_sentence(enhancer):
    """Greedy decoding without a repeat penalty answers this one with "… a small island, a
    small island, …" until the token budget (the enhancer then served its template)."""
    out = enhancer.rewrite("a person")
    assert out.source == "lm", out
    assert not repeats(out.text) and out.text.endswith((".", "!", "?"))


def test_the_rewrite_is_one_sentence_and_decoding_stops_at_its_end(enhancer):
    """SmolLM2 goes on past its first sentence until the token budget (this prompt got two
    sentences, 42 words, from 48 tokens); the enhancer stops decoding at the first one."""
    out = enhancer.rewrite("a robot waving in a city street at night")
    assert out.source == "lm", out
    assert out.text.endswith((".", "!", "?")) and 3 <= len(out.text.split()) <= 30
    assert not re.search(r"[.!?]\s", out.text), out.text  # no second sentence
    assert _ends_sentence('He waves." ') and _ends_sentence("Look up!")
    assert not _ends_sentence("a speed of 3") and not _ends_sentence("waves,")


def test_a_looping_answer_is_refused():
    assert repeats("a small island, a small island, a small island")
    assert not repeats("The person waves, then waves again, and smiles.")
    enhancer = PromptEnhancer(load=False)
    assert enhancer._unusable("she stood on a small island, a small island, a small island") \
        == "repetitive answer"


def test_a_missing_lm_falls_back_to_a_plain_prompt(tmp_path):
    plain = PromptEnhancer(tmp_path / "missing.gguf")
    out = plain.enhance("a knight  on a beach.", "walking", 0.05)
    assert out.text == "a knight on a beach; a person walking, strong motion"
    assert out.source.startswith("fallback") and out.camera_move == "static"


def test_watermark_and_provenance_survive_the_mp4_encode():
    photo = read_image(sample_data("opencv-doc/basketball1.png"))
    small = np.stack([square(photo[:, i * 8:], 64) for i in range(9)])  # the tiny model's size
    frames = servable_frames(small)
    assert frames.shape == (9, 256, 256, 3)
    marked = embed(frames)
    psnr = 10 * np.log10(255 ** 2 / np.mean((marked.astype(float) - frames) ** 2))
    assert psnr > 35  # invisible
    data = encode_mp4(marked, 12, metadata=provenance_tags("motioncontrol-student", 4))
    decoded = read_video(data).frames
    found = detect(decoded)
    assert found.found and found.bit_accuracy >= 0.9, found
    assert not detect(read_video(encode_mp4(frames, 12)).frames).found  # unmarked
    record = provenance_of(read_mp4_metadata(data))
    assert record["model"] == "motioncontrol-student" and record["version"] == "4"
    assert provenance_of({"comment": json.dumps({"generator": "other"})}) is None


@pytest.mark.parametrize("height, width", [(256, 256), (262, 301)])
def test_the_vectorised_mark_is_the_one_invisible_watermark_reads(height, width):
    """`embed` is invisible-watermark's dwtDctSvd vectorised: the library's own decoder must
    read every payload bit of every frame (before any video encode), on sizes the blocks do
    not tile too, and the frames must stay at least as close to the originals as the
    library's own encoder leaves them."""
    from imwatermark import WatermarkDecoder, WatermarkEncoder

    photo = read_image(sample_data("opencv-doc/basketball1.png"))
    frames = np.stack([cv2.resize(photo[:, i * 16:], (width, height)) for i in range(3)])
    frames[1] = cv2.GaussianBlur(frames[1], (31, 31), 10)  # smooth, as a trained model's
    marked = embed(frames)
    assert marked.shape == frames.shape and marked.dtype == np.uint8
    decoder = WatermarkDecoder("bytes", 32)
    for frame in marked:
        assert decoder.decode(frame[..., ::-1].copy(), "dwtDctSvd") == b"MCtl"
    library = WatermarkEncoder()
    library.set_watermark("bytes", b"MCtl")
    theirs = np.stack([library.encode(f[..., ::-1].copy(), "dwtDctSvd")[..., ::-1]
                       for f in frames])

    def psnr(x):
        return 10 * np.log10(255 ** 2 / np.mean((x.astype(float) - frames) ** 2))

    assert psnr(marked) >= psnr(theirs) > 35
