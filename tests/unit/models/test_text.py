"""The text encoder traced to TorchScript (what a served student_dit loads) gives the same
token embeddings, masks and pooled embeddings as the transformers model it was traced from,
at every length and truncation, and loads without importing transformers."""

import subprocess
import sys

import pytest
import torch

from models.text import TRACED, TextEncoder

TEXTS = ["a person walking in the street, the camera pans left", "x",
         "clapping " * 60, "Überraschung! 你好 🙂 — a wave"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text_encoder")
    original = TextEncoder()  # the bundled MiniLM, through transformers
    original.save(folder)
    original.save_traced(folder)
    return original, TextEncoder(folder), folder


def test_the_trace_is_loaded_from_a_folder_that_has_one(encoders):
    original, traced, folder = encoders
    assert (folder / TRACED).is_file()
    assert traced.traced and not original.traced
    assert traced.dim == original.dim == 384
    assert not traced.traceable


@pytest.mark.parametrize("max_len", [4, 32, 128])  # truncated, padded, long text untruncated
def test_the_trace_encodes_as_the_original(encoders, max_len):
    original, traced, _ = encoders
    emb, mask = original.tokens(TEXTS, max_len)
    traced_emb, traced_mask = traced.tokens(TEXTS, max_len)
    assert torch.equal(traced_mask, mask)
    assert mask.shape[1] <= max_len and mask[1].sum() == 3  # "x": CLS, x, SEP
    torch.testing.assert_close(traced_emb, emb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(traced.pooled(TEXTS), original.pooled(TEXTS), rtol=1e-5,
                               atol=1e-5)


def test_loading_the_trace_imports_no_transformers(encoders):
    folder = encoders[2]
    probe = (f"import sys; from models.text import TextEncoder; e = TextEncoder({str(folder)!r}); "
             "e.tokens(['a person waving']); print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stderr
