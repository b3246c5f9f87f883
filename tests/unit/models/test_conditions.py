"""TextEncoder (real MiniLM, offline), build_conditions on a real synthetic batch, and
Conditions.check against latents and a DiT config."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flows.profiles import profile_config
from models.conditions import (
    DROP_KEYS,
    Conditions,
    build_conditions,
    drop_masks,
)
from models.data.dataset import ConditionDropout
from models.dit import MotionDiT
from models.errors import InvalidInput
from models.extraction import reference_identity
from models.synthetic import make_motion, render_cross_identity, sample_character
from models.text import TextEncoder
from tests.tiny_models import collate, random_conditions

CFG = profile_config("debug").dit
SIZE, FRAMES = 64, 17


@pytest.fixture(scope="module")
def text() -> TextEncoder:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield TextEncoder()
    mp.undo()


@pytest.fixture(scope="module")
def clips():
    motion = make_motion("wave", frames=FRAMES, fps=24)
    return render_cross_identity(motion, [sample_character(1), sample_character(2)],
                                 size=SIZE, camera="pan_left")


def encode(video: torch.Tensor) -> torch.Tensor:
    """A stand-in VAE: (N, 3, T, H, W) -> (N, C, 1 + (T - 1) / 4, H/8, W/8) (every 4th frame
    pooled, channels tiled)."""
    assert video.min() >= -1 and video.max() <= 1
    pooled = F.avg_pool3d(video[:, :, ::CFG.temporal_factor],
                          (1, CFG.spatial_factor, CFG.spatial_factor))
    return pooled.repeat(1, -(-CFG.latent_channels // 3), 1, 1, 1)[:, : CFG.latent_channels]


# --------------------------------------------------------------------------- text

def test_text_tokens_and_pooled(text):
    phrases = ["a child waves both hands", "clapping", ""]
    tokens, mask = text.tokens(phrases)
    assert tokens.shape == (3, mask.shape[1], 384) and mask.dtype == torch.bool
    assert mask.sum(1).tolist()[1:] == [3, 2]  # CLS clapping SEP; CLS SEP
    assert (tokens[~mask] == 0).all()
    short, short_mask = text.tokens(phrases, max_len=4)
    assert short.shape[1] == 4 and short_mask[0].all()
    with pytest.raises(InvalidInput):
        text.tokens("not a list")
    pooled = text.pooled(phrases)
    assert pooled.shape == (3, 384)
    torch.testing.assert_close(pooled.norm(dim=1), torch.ones(3))


def test_text_is_deterministic_cached_and_batch_independent(text):
    a, _ = text.tokens(["a man jumps", "smiling"])
    b, _ = text.tokens(["smiling"])
    torch.testing.assert_close(a[1, :3], b[0, :3])
    again, _ = text.tokens(["a man jumps", "smiling"])
    assert torch.equal(a, again)
    assert ("smiling", 32) in text._cache
    similar = text.pooled(["waving hello", "waves a hand", "bowing deeply"])
    assert similar[0] @ similar[1] > similar[0] @ similar[2]  # it is a real sentence model


def test_pooled_matches_sentence_transformers(text):
    from sentence_transformers import SentenceTransformer

    from models.assets import minilm_dir

    st = SentenceTransformer(str(minilm_dir()), device="cpu")
    phrases = ["facepalm", "a woman in a red coat dances"]
    expected = torch.from_numpy(st.encode(phrases, normalize_embeddings=True))
    torch.testing.assert_close(text.pooled(phrases), expected, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- build_conditions

def test_build_conditions_on_a_synthetic_batch(text, clips):
    batch = collate(clips)
    cond = build_conditions(batch, encode_latents=encode, text=text, size=SIZE, device="cpu")
    b, lat_t, lat = 2, 1 + (FRAMES - 1) // CFG.temporal_factor, SIZE // CFG.spatial_factor
    assert cond.reference_latents.shape == (b, CFG.latent_channels, 1, lat, lat)
    for maps in (cond.body_maps, cond.hand_maps):
        assert maps.shape == (b, 3, FRAMES, SIZE, SIZE) and maps.dtype == torch.float32
        assert maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0.5
    assert not torch.equal(cond.body_maps, cond.hand_maps)
    assert cond.face_codes.shape == (b, FRAMES, 68, 3) and cond.face_codes.abs().max() > 0
    assert cond.identity_embedding.shape == (b, 128) and cond.identity_valid.dtype == torch.bool
    # a face found <=> a non-zero embedding (synthetic faces are small: dlib finds some)
    assert (cond.identity_embedding.abs().sum(1) > 0).tolist() == cond.identity_valid.tolist()
    assert cond.reference_pixels.shape == (b, 3, SIZE, SIZE)
    assert cond.reference_pixels.min() >= -1 and cond.reference_pixels.max() <= 1
    assert cond.subject_library.shape == (b, 0, 3, SIZE, SIZE) and cond.subject_mask.shape == (b, 0)
    assert cond.text_tokens.shape[:2] == cond.text_mask.shape and cond.text_mask.any(1).all()
    assert cond.action_embedding.shape == (b, 384)
    assert cond.camera.shape == (b, FRAMES, 3) and cond.camera[0, -1, 0] < 0  # pan left
    assert cond.anchor_latents is None
    # pose maps follow the target's keypoints, expressions the driver's face
    swapped = build_conditions(collate(clips, cross=False), encode_latents=encode, text=text,
                               size=SIZE, device="cpu")
    assert torch.equal(swapped.body_maps, cond.body_maps)

    drop = drop_masks(batch, "cpu")
    assert drop["face"].tolist() == [False, True] and set(drop) == set(DROP_KEYS)
    model = MotionDiT(CFG)
    x = torch.randn(b, CFG.latent_channels, lat_t, lat, lat)
    with torch.no_grad():
        assert model(x, torch.rand(b), cond, drop).shape == x.shape


def test_subject_library_becomes_reference_frames(text, clips):
    batch = collate(clips)
    library = np.stack([np.stack([c.frames[0], c.frames[-1]]) for c in clips])
    batch["subject_library"] = torch.from_numpy(library[:, :, ::2, ::2])  # other size: resized
    batch["subject_mask"] = torch.tensor([[True, False], [True, True]])
    cond = build_conditions(batch, encode_latents=encode, text=text, size=SIZE, device="cpu")
    assert cond.subject_library.shape == (2, 2, 3, SIZE, SIZE)
    assert cond.reference_latents.shape[2] == 3  # reference + 2 library frames
    torch.testing.assert_close(cond.reference_latents[:, :, 1:],
                               encode(cond.subject_library.flatten(0, 1)[:, :, None])
                               .unflatten(0, (2, 2)).transpose(1, 2).flatten(2, 3))
    assert cond.subject_mask.tolist() == [[True, False], [True, True]]


def test_the_warp_prior_is_the_reference_warped_to_the_target_pose(text, clips):
    """A `warp` skip model starts from the reference thin-plate-spline-warped to each frame's
    pose (the TPS baseline) through the VAE; the `still` one from the reference repeated."""
    from models.baselines import WARP_PRIOR_SMOOTHING, tps_warp
    from models.frames import to_pixels

    batch = collate(clips)
    warped = build_conditions(batch, encode_latents=encode, text=text, size=SIZE, device="cpu",
                              still=True, warp=True)
    still = build_conditions(batch, encode_latents=encode, text=text, size=SIZE, device="cpu",
                             still=True)
    expect = np.stack([tps_warp(c.reference_image, c.reference_keypoints, c.keypoints, SIZE,
                                smoothing=WARP_PRIOR_SMOOTHING) for c in clips])
    torch.testing.assert_close(warped.still_latents, encode(to_pixels(expect, SIZE)))
    torch.testing.assert_close(still.still_latents, encode(
        still.reference_pixels[:, :, None].expand(-1, -1, FRAMES, -1, -1)))
    # the waving arm moves: the warped prior differs from the still one in later frames
    assert not torch.allclose(warped.still_latents[:, :, -1], still.still_latents[:, :, -1])

    del batch["reference_keypoints"]
    with pytest.raises(InvalidInput, match="reference's keypoints"):
        build_conditions(batch, encode_latents=encode, text=text, size=SIZE, device="cpu",
                         still=True, warp=True)
    with pytest.raises(InvalidInput, match="reference_prior"):
        dataclasses.replace(CFG, reference_prior="flow")


def test_identity_embedding_is_cached(clips):
    image = clips[0].reference_image
    first = reference_identity(image)
    assert reference_identity(image.copy()) is first


def test_build_conditions_rejects_bad_batches(text, clips):
    batch = collate(clips)
    del batch["caption"]
    with pytest.raises(InvalidInput, match="caption"):
        build_conditions(batch, encode_latents=encode, text=text, size=SIZE, device="cpu")
    batch = collate(clips)
    batch["camera"] = batch["camera"][:, :3]
    with pytest.raises(InvalidInput, match="camera"):
        build_conditions(batch, encode_latents=encode, text=text, size=SIZE, device="cpu")


def test_conditions_helpers():
    cond = random_conditions(CFG, 2, 5, 8, library=1)
    doubled = cond.repeat(2)
    assert isinstance(doubled, Conditions) and doubled.batch_size == 4
    assert torch.equal(doubled.camera[2:], cond.camera)
    assert cond.to(dtype=torch.float64).body_maps.dtype == torch.float64
    assert cond.to(dtype=torch.float64).identity_valid.dtype == torch.bool
    assert drop_masks({}, "cpu") is None


# --------------------------------------------------------------------------- Conditions.check

def test_training_dropout_knows_every_condition_name():
    names = {f.name for f in dataclasses.fields(ConditionDropout)} - {"everything"}
    assert names == set(DROP_KEYS)


def test_check_completes_the_drop_masks():
    cond, latents, t = random_conditions(CFG, 2, 5, 8), torch.zeros(2, 4, 5, 8, 8), torch.rand(2)
    drop = cond.check(latents, t, CFG, {"face": torch.tensor([True, False]), "text": True})
    assert list(drop) == list(DROP_KEYS)
    assert all(mask.shape == (2,) and mask.dtype == torch.bool for mask in drop.values())
    assert drop["face"].tolist() == [True, False] and drop["text"].tolist() == [True, True]
    assert not any(drop[k].any() for k in DROP_KEYS if k not in ("face", "text"))
    with pytest.raises(InvalidInput, match="unknown drop keys"):
        cond.check(latents, t, CFG, {"pose": True})
    with pytest.raises(InvalidInput, match=r"drop\['body'\]"):
        cond.check(latents, t, CFG, {"body": torch.ones(3, dtype=torch.bool)})


@pytest.mark.parametrize("field,shape", [
    ("body_maps", (2, 3, 9, 64, 64)),  # 9 pixel frames make 3 latent frames, not 5
    ("hand_maps", (2, 3, 17, 32, 32)),
    ("face_codes", (2, 17, 68, 2)),
    ("identity_embedding", (2, 64)),
    ("reference_latents", (2, 4, 1, 4, 4)),
    ("reference_pixels", (1, 3, 64, 64)),
    ("text_tokens", (2, 6, 128)),
    ("camera", (2, 17, 2)),
    ("guidance", (2, 3)),
])
def test_check_names_the_condition_that_does_not_fit(field, shape):
    cond = random_conditions(CFG, 2, 5, 8)
    latents, t = torch.zeros(2, 4, 5, 8, 8), torch.rand(2)
    cond.check(latents, t, CFG)  # fits as built
    bad = dataclasses.replace(cond, **{field: torch.zeros(shape)})
    with pytest.raises(InvalidInput, match=f"cond.{field} must have shape"):
        bad.check(latents, t, CFG)


def test_check_rejects_latents_and_times_that_do_not_fit():
    cond = random_conditions(CFG, 2, 5, 8)
    with pytest.raises(InvalidInput, match="latents"):
        cond.check(torch.zeros(2, 16, 5, 8, 8), torch.rand(2), CFG)  # tiny's channels
    with pytest.raises(InvalidInput, match="divisible by patch_size"):
        cond.check(torch.zeros(2, 4, 5, 7, 7), torch.rand(2), CFG)
    with pytest.raises(InvalidInput, match="t must be"):
        cond.check(torch.zeros(2, 4, 5, 8, 8), torch.rand(3), CFG)
