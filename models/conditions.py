"""The DiT's conditions as tensors, built from a dataset batch (models/data/dataset.py).

    cond = build_conditions(batch, encode_latents=vae_encode, text=TextEncoder(), size=64,
                            device="cpu")
    velocity = model(x_t, t, cond, drop=drop_masks(batch, "cpu"))

Pose maps are rendered from the target's keypoints (the driver retargeted to the reference
character), expression codes come from the driver's face (identity-agnostic by construction),
the identity embedding from dlib on the reference image (cached per image).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.errors import InvalidInput
from models.extraction import reference_identity
from models.frames import resize_frames, to_pixels

if TYPE_CHECKING:
    from models.dit import DiTConfig
    from models.text import TextEncoder

# The conditions a caller can drop (replace by the model's learned null embedding) for
# classifier-free guidance: the keys of the DiT's `drop` masks. "reference" drops the
# reference frames and every identity token, "text" the caption and the action phrase.
DROP_KEYS = ("text", "reference", "body", "face", "hands", "camera", "intensity")
FACE_POINTS, FACE_CODE_DIM = 68, 3  # expression codes: 68 iBUG landmarks x 3 coordinates
IDENTITY_DIM = 128  # dlib face embedding
PREPARED = "prepared"  # the example/batch key of what PrepareConditions computed


@dataclass
class Conditions:
    """Every condition of a batch of B clips of T pixel frames (H x W) whose latents are
    (B, C, T', h, w). Tensors live on the model's device."""

    reference_latents: Tensor  # (B, C, R, h, w): reference image [+ subject library frames]
    body_maps: Tensor  # (B, 3, T, H, W) float in [0, 1], depth-ordered body pose maps
    hand_maps: Tensor  # (B, 3, T, H, W)
    face_codes: Tensor  # (B, T, 68, 3) identity-agnostic expression codes
    identity_embedding: Tensor  # (B, 128) dlib embedding of the reference (zeros: no face)
    identity_valid: Tensor  # (B,) bool, a face was found
    reference_pixels: Tensor  # (B, 3, H, W) in [-1, 1]
    subject_library: Tensor  # (B, K, 3, H, W) in [-1, 1], K >= 0
    subject_mask: Tensor  # (B, K) bool, which library images exist
    text_tokens: Tensor  # (B, L, 384) MiniLM token embeddings of the caption
    text_mask: Tensor  # (B, L) bool
    action_embedding: Tensor  # (B, 384) MiniLM pooled embedding of the action phrase
    motion_intensity: Tensor  # (B,)
    camera: Tensor  # (B, T, 3) pan_x, pan_y, zoom
    # (B, C, T', h, w): the clip a model with `reference_skip` starts from, through the VAE:
    # the reference held still for the clip's T frames (the static baseline), or warped to
    # the target pose (`DiTConfig.reference_prior`)
    still_latents: Tensor | None = None
    # (B, 3, T, H, W) in [-1, 1]: the pixels still_latents encode, which the output is decoded
    # onto (`LatentVAE.decode_on_prior`)
    prior_pixels: Tensor | None = None
    anchor_latents: Tensor | None = None  # (B, C, T', h, w): given latent frames
    anchor_mask: Tensor | None = None  # (B, T') bool, which latent frames are given
    guidance: Tensor | None = None  # (B, 2) text and reference guidance scales (a student's)

    @property
    def batch_size(self) -> int:
        return self.reference_latents.shape[0]

    def map(self, fn: Callable[[Tensor], Tensor]) -> Conditions:
        """A copy with `fn` applied to every tensor."""
        return dataclasses.replace(self, **{
            f.name: fn(v) for f in dataclasses.fields(self)
            if isinstance(v := getattr(self, f.name), Tensor)})

    def to(self, device=None, dtype: torch.dtype | None = None) -> Conditions:
        """Move to `device`; floating tensors also cast to `dtype` when given."""
        return self.map(lambda v: v.to(device, dtype if dtype and v.is_floating_point()
                                       else None))

    def repeat(self, n: int) -> Conditions:
        """The batch n times over (B -> n B), for guidance branches in one forward."""
        return self.map(lambda v: torch.cat([v] * n))

    def with_anchors(self, latents: Tensor, mask: Tensor) -> Conditions:
        """Given latent frames (B, C, T', h, w) where `mask` (B, T') is True, e.g. the first
        and last frames of a long-video sub-clip (the others are ignored)."""
        if latents.ndim != 5 or mask.shape != (latents.shape[0], latents.shape[2]):
            raise InvalidInput(f"anchors must be (B, C, T', h, w) latents and a (B, T') mask, "
                               f"got {tuple(latents.shape)} and {tuple(mask.shape)}")
        return dataclasses.replace(self, anchor_latents=latents,
                                   anchor_mask=mask.to(latents.device, torch.bool))

    def with_guidance(self, text_scale: float | Tensor, reference_scale: float | Tensor
                      ) -> Conditions:
        """The guidance scales a distilled student should reproduce, per sample."""
        b, device = self.batch_size, self.reference_latents.device
        scales = [torch.as_tensor(s, dtype=torch.float32, device=device).expand(b)
                  for s in (text_scale, reference_scale)]
        return dataclasses.replace(self, guidance=torch.stack(scales, 1))

    def check(self, latents: Tensor, t: Tensor, config: DiTConfig,
              drop: Mapping[str, Tensor | bool] | None = None) -> dict[str, Tensor]:
        """Raise InvalidInput, naming the tensor and the shape it needs, where the noisy
        latents (B, C, T', h, w), their times t (B,), these conditions or the drop masks do
        not fit each other and `config` (a models.dit.DiTConfig). Returns the drop masks
        completed: a (B,) bool tensor for each of DROP_KEYS (False where not given)."""
        c = config
        if latents.ndim != 5 or latents.shape[1] != c.latent_channels:
            raise InvalidInput(f"x must be (B, {c.latent_channels}, T, H, W) latents, "
                               f"got {tuple(latents.shape)}")
        b, _, frames, h, w = latents.shape
        if any(n % p for n, p in zip((frames, h, w), c.patch_size, strict=True)):
            raise InvalidInput(f"latent (T, H, W) = {(frames, h, w)} must be divisible by "
                               f"patch_size {c.patch_size}")
        if t.shape != (b,):
            raise InvalidInput(f"t must be ({b},) times in [0, 1], got {tuple(t.shape)}")

        # The pixel (T, H, W) these latents decode to, as the VAE's factors give it.
        pixels = (1 + c.temporal_factor * (frames - 1), h * c.spatial_factor,
                  w * c.spatial_factor)
        k = self.subject_library.shape[1] if self.subject_library.ndim == 5 else -1
        expect = {  # None: any size
            "reference_latents": (b, c.latent_channels, None, h, w),
            "body_maps": (b, 3, *pixels), "hand_maps": (b, 3, *pixels),
            "face_codes": (b, pixels[0], FACE_POINTS, FACE_CODE_DIM),
            "identity_embedding": (b, IDENTITY_DIM), "identity_valid": (b,),
            "reference_pixels": (b, 3, *pixels[1:]),
            "subject_library": (b, None, 3, *pixels[1:]), "subject_mask": (b, k),
            "text_tokens": (b, None, c.text_dim), "action_embedding": (b, c.text_dim),
            "motion_intensity": (b,), "camera": (b, pixels[0], 3),
        }
        if self.anchor_latents is not None:
            expect |= {"anchor_latents": tuple(latents.shape), "anchor_mask": (b, frames)}
        if c.reference_skip or self.still_latents is not None:
            expect["still_latents"] = tuple(latents.shape)
        if self.guidance is not None:
            expect["guidance"] = (b, 2)
        for name, shape in expect.items():
            got = getattr(self, name)
            if got is None or got.ndim != len(shape) or any(
                    s is not None and g != s for g, s in zip(got.shape, shape, strict=True)):
                raise InvalidInput(f"cond.{name} must have shape {shape} (None: any) for "
                                   f"latents {tuple(latents.shape)}, got "
                                   f"{None if got is None else tuple(got.shape)}")
        if self.text_mask.shape != self.text_tokens.shape[:2]:
            raise InvalidInput("cond.text_mask must match text_tokens' (B, L)")
        if self.reference_latents.shape[2] < 1:
            raise InvalidInput("cond.reference_latents needs the reference frame (R >= 1)")
        if not bool(self.text_mask.bool().any(1).all()):
            raise InvalidInput("cond.text_mask must keep at least one token per sample")

        drop = dict(drop or {})
        unknown = set(drop) - set(DROP_KEYS)
        if unknown:
            raise InvalidInput(f"unknown drop keys {sorted(unknown)}; use {DROP_KEYS}")
        masks = {}
        for key in DROP_KEYS:
            mask = torch.as_tensor(drop.get(key, False), dtype=torch.bool,
                                   device=latents.device)
            if mask.ndim > 1 or (mask.ndim == 1 and mask.shape[0] != b):
                raise InvalidInput(f"drop[{key!r}] must be a bool or a ({b},) mask, "
                                   f"got shape {tuple(mask.shape)}")
            masks[key] = mask.expand(b)
        return masks


def decode_frames(vae, latents: Tensor, cond: Conditions | None = None) -> Tensor:
    """Sampled latents (B, C, T', h, w) -> pixels (B, 3, T, H, W) in [-1, 1]: onto the prior
    clip the latents started from where `cond` carries one (`LatentVAE.decode_on_prior`),
    else the VAE's decode alone."""
    if cond is None or cond.prior_pixels is None or cond.still_latents is None:
        return vae.decode_latents(latents)
    return vae.decode_on_prior(latents, cond.still_latents, cond.prior_pixels)


# --------------------------------------------------------------------------- batch -> tensors

def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 (area filter)."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InvalidInput(f"images must be (N, H, W, 3) uint8, got {images.dtype} "
                           f"{images.shape}")
    resized = [img if img.shape[:2] == (size, size)
               else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) for img in images]
    return np.stack(resized) if resized else np.zeros((0, size, size, 3), np.uint8)


def _unit(images: Tensor) -> Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1


def _pose_maps(kps: np.ndarray, size: int, part: str) -> np.ndarray:
    """(B, T, 133, 4) -> (B, 3, T, size, size) uint8 (x 1/255 on the model's device)."""
    from models.motion import render_pose_map

    maps = np.stack([render_pose_map(k, (size, size), parts=(part,)) for k in kps])
    return np.ascontiguousarray(maps.transpose(0, 4, 1, 2, 3))


def _face_codes(kps: np.ndarray, aspect: float) -> np.ndarray:
    """(B, T, 133, 4) -> (B, T, 68, 3) expression codes (zeros where no face is seen);
    aspect: the frames' width / height."""
    from models.motion import canonicalize_face

    out = np.zeros(kps.shape[:2] + (FACE_POINTS, FACE_CODE_DIM), np.float32)
    for i, clip in enumerate(kps):
        try:
            codes = canonicalize_face(clip, aspect=aspect).codes
        except InvalidInput:  # no frame shows the face
            continue
        out[i, ..., : codes.shape[-1]] = codes
    return out


def prepare_batch(batch: dict, *, text: TextEncoder, size: int, max_text_len: int = 32,
                  pad_text: bool = False, motion: bool = False, warp: bool = False
                  ) -> dict[str, np.ndarray]:
    """Everything the conditions need but the VAE, as arrays on the CPU: the half of
    `build_conditions` that training runs in its DataLoader workers (`PrepareConditions`),
    so the training step is the model's forward and backward.

    batch: `keypoints` (B, T, 133, 4) (the target's pose), `driver_keypoints` (expression
    source; default: keypoints), `reference` (B, H, W, 3) uint8, `caption`, `action_phrase`
    (lists of B strings), `motion_intensity` (B,), optional `frames` (B, T, H, W, 3) uint8
    (the target clip, resized to `size` here), optional `camera` (B, T, 3) (default static),
    optional `subject_library` (B, K, H, W, 3) uint8 with `subject_mask` (B, K), optional
    `identity_embedding`: B precomputed `reference_identity` results.
    pad_text: pad the caption tokens to `max_text_len` (examples of one length collate);
    motion: add the target's optical-flow magnitude (the region-aware loss's weights);
    warp: add the reference warped to the target pose (`warped`, (B, T, size, size, 3)
    uint8), which needs `reference_keypoints` (B, 133, 4), normalised like `keypoints`.
    """
    missing = {"keypoints", "reference", "caption", "action_phrase", "motion_intensity"} \
        - batch.keys()
    if missing:
        raise InvalidInput(f"batch lacks {sorted(missing)}")
    kps = _numpy(batch["keypoints"]).astype(np.float32)
    if kps.ndim != 4 or kps.shape[2:] != (133, 4):
        raise InvalidInput(f"batch['keypoints'] must be (B, T, 133, 4), got {kps.shape}")
    b, frames = kps.shape[:2]
    driver = _numpy(batch.get("driver_keypoints", kps)).astype(np.float32)
    if driver.shape != kps.shape:
        raise InvalidInput(f"driver_keypoints {driver.shape} must match keypoints {kps.shape}")
    captions, phrases = list(batch["caption"]), list(batch["action_phrase"])
    if len(captions) != b or len(phrases) != b:
        raise InvalidInput(f"caption and action_phrase need {b} strings each")

    reference = _numpy(batch["reference"])
    if reference.ndim != 4 or len(reference) != b:
        raise InvalidInput(f"batch['reference'] must be (B, H, W, 3) uint8, got "
                           f"{reference.shape}")
    library = batch.get("subject_library")
    library = np.zeros((b, 0, size, size, 3), np.uint8) if library is None else _numpy(library)
    if library.ndim != 5 or len(library) != b:
        raise InvalidInput(f"subject_library must be (B, K, H, W, 3) uint8, got {library.shape}")
    k = library.shape[1]
    lib_mask = batch.get("subject_mask")
    lib_mask = np.ones((b, k), bool) if lib_mask is None else _numpy(lib_mask).astype(bool)
    if lib_mask.shape != (b, k):
        raise InvalidInput(f"subject_mask must be ({b}, {k}), got {lib_mask.shape}")

    frames_shape = batch["frames"].shape if "frames" in batch else (b, frames, 1, 1)
    aspect = frames_shape[3] / frames_shape[2]
    # A caller that already has the references' dlib embeddings (serving's identity
    # encoder) passes them as `identity_embedding`: B arrays, None where no face.
    embeddings = batch.get("identity_embedding") or [reference_identity(img)
                                                      for img in reference]
    camera = batch.get("camera")
    camera = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (b, frames, 1)) \
        if camera is None else _numpy(camera).astype(np.float32)
    if camera.shape != (b, frames, 3):
        raise InvalidInput(f"camera must be ({b}, {frames}, 3), got {camera.shape}")
    tokens, mask = text.tokens(captions, max_len=max_text_len)
    if pad_text:
        tokens = F.pad(tokens, (0, 0, 0, max_text_len - tokens.shape[1]))
        mask = F.pad(mask, (0, max_text_len - mask.shape[1]))

    prepared = {
        "reference": _resized(reference, size),
        "subject_library": _resized(library.reshape(-1, *library.shape[2:]), size)
        .reshape(b, k, size, size, 3),
        "subject_mask": lib_mask,
        "body_maps": _pose_maps(kps, size, "body"),
        "hand_maps": _pose_maps(kps, size, "hands"),
        "face_codes": _face_codes(driver, aspect),
        "identity_embedding": np.stack([np.zeros(IDENTITY_DIM, np.float32) if e is None
                                        else np.asarray(e, np.float32) for e in embeddings]),
        "identity_valid": np.array([e is not None for e in embeddings]),
        "text_tokens": tokens.numpy(), "text_mask": mask.numpy(),
        "action_embedding": text.pooled(phrases).numpy(),
        "motion_intensity": _numpy(batch["motion_intensity"]).astype(np.float32).reshape(b),
        "camera": camera,
    }
    if warp:
        prepared["warped"] = _warped(prepared["reference"], batch.get("reference_keypoints"),
                                     kps)
    if "frames" in batch:
        prepared["frames"] = resize_frames(_numpy(batch["frames"]), size)
        if motion:
            from models.losses import flow_magnitude

            # float16: half the bytes to cache and move; region weights need no more
            prepared["motion"] = flow_magnitude(prepared["frames"]).numpy().astype(np.float16)
    return prepared


def _warped(references: np.ndarray, reference_keypoints, keypoints: np.ndarray) -> np.ndarray:
    """(B, T, size, size, 3): each (size²) reference thin-plate-spline-warped to its (T, 133,
    4) target keypoints (models.baselines.tps_warp), the prior of a `warp` skip model."""
    from models.baselines import WARP_PRIOR_SMOOTHING, tps_warp

    if reference_keypoints is None:
        raise InvalidInput("a model that starts from the warped reference needs the "
                           "reference's keypoints (batch['reference_keypoints'], (B, 133, 4))")
    ref_kps = _numpy(reference_keypoints).astype(np.float32)
    if ref_kps.shape != (len(references), 133, 4):
        raise InvalidInput(f"reference_keypoints must be ({len(references)}, 133, 4), got "
                           f"{ref_kps.shape}")
    size = references.shape[1]
    return np.stack([tps_warp(ref, r, k, size, smoothing=WARP_PRIOR_SMOOTHING)
                     for ref, r, k in zip(references, ref_kps, keypoints, strict=True)])


def conditions_from_prepared(prepared: Mapping, *, encode_latents: Callable[[Tensor], Tensor],
                             device, still: bool = False) -> Conditions:
    """The Conditions of a `prepare_batch` result (or a collated batch of them), the
    reference (+ library) images encoded by the VAE: the half of `build_conditions` that
    runs where the model does. still: also encode the clip a model with `reference_skip`
    starts from (`still_latents`, a whole clip through the VAE): the reference warped to the
    pose where `prepared` has it (`warped`), else the reference held still."""
    def tensor(name: str, dtype=torch.float32) -> Tensor:
        return torch.as_tensor(np.asarray(prepared[name])).to(device, dtype)

    ref_pixels = _unit(torch.as_tensor(np.asarray(prepared["reference"])))
    library = torch.as_tensor(np.asarray(prepared["subject_library"]))
    b, k, size = library.shape[0], library.shape[1], ref_pixels.shape[-1]
    lib_pixels = _unit(library.flatten(0, 1))
    frames = prepared["body_maps"].shape[2]
    with torch.no_grad():
        latents = encode_latents(torch.cat([ref_pixels, lib_pixels]).to(device)[:, :, None])
        if not still:
            still_latents = prior_pixels = None
        else:
            prior_pixels = (to_pixels(torch.as_tensor(np.asarray(prepared["warped"])), size)
                            if "warped" in prepared else
                            ref_pixels[:, :, None].expand(-1, -1, frames, -1, -1)).to(device)
            still_latents = encode_latents(prior_pixels).to(device)
    latents = torch.cat([latents[:b], latents[b:].unflatten(0, (b, k)).transpose(1, 2)
                         .flatten(2, 3)], 2) if k else latents[:b]
    # Examples padded to one text length: keep the columns some caption uses.
    mask = tensor("text_mask", torch.bool)
    length = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1
    return Conditions(
        reference_latents=latents.to(device),
        body_maps=tensor("body_maps") / 255.0,
        hand_maps=tensor("hand_maps") / 255.0,
        face_codes=tensor("face_codes"),
        identity_embedding=tensor("identity_embedding"),
        identity_valid=tensor("identity_valid", torch.bool),
        reference_pixels=ref_pixels.to(device),
        subject_library=lib_pixels.view(b, k, 3, size, size).to(device),
        subject_mask=tensor("subject_mask", torch.bool),
        text_tokens=tensor("text_tokens")[:, :length], text_mask=mask[:, :length],
        action_embedding=tensor("action_embedding"),
        motion_intensity=tensor("motion_intensity"),
        camera=tensor("camera"),
        still_latents=still_latents, prior_pixels=prior_pixels,
    )


def build_conditions(batch: dict, *, encode_latents: Callable[[Tensor], Tensor],
                     text: TextEncoder, size: int, device, max_text_len: int = 32,
                     still: bool = False, warp: bool = False) -> Conditions:
    """Conditions of a collated dataset batch (`prepare_batch` says what it holds), in one
    call: serving and sampling use this. encode_latents: (N, 3, T, H, W) video in [-1, 1] ->
    latents (the VAE), run without gradients. text: a `models.text.TextEncoder`. size: the
    clip's side in pixels. still / warp: the prior clip of a `reference_skip` model."""
    prepared = prepare_batch(batch, text=text, size=size, max_text_len=max_text_len,
                             warp=warp)
    return conditions_from_prepared(prepared, encode_latents=encode_latents, device=device,
                                    still=still)


class PrepareConditions:
    """A dataset transform: adds `prepare_batch`'s arrays to an example as
    `example["prepared"]`, in the DataLoader worker that reads it. An example comes back
    every epoch (the same target, driver and reference), so its arrays are cached, up to
    `cache_bytes` per worker (oldest out). Picklable (spawned workers); the text encoder
    (`text_dir`, models.text.TextEncoder's folder; None: MiniLM) loads once per worker, on
    first use."""

    def __init__(self, size: int, *, motion: bool = False, warp: bool = False,
                 max_text_len: int = 32, cache_bytes: int = 1 << 30,
                 text_dir: str | Path | None = None):
        self.size, self.motion, self.warp, self.max_text_len = size, motion, warp, max_text_len
        self.text_dir = text_dir
        self.cache_bytes, self.bytes = cache_bytes, 0
        self._cache: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()
        self._text: TextEncoder | None = None

    def __call__(self, example: dict) -> dict:
        reference = np.ascontiguousarray(example["reference"])
        key = (example.get("key"), example.get("driver_key"), example.get("static"),
               hashlib.blake2b(reference.tobytes(), digest_size=16).digest())
        if key[0] is None:  # an example without a key cannot be recognised next epoch
            return {**example, PREPARED: self._prepare(example)}
        prepared = self._cache.get(key)
        if prepared is None:
            prepared = self._prepare(example)
            self._cache[key] = prepared
            self.bytes += sum(v.nbytes for v in prepared.values())
            while self.bytes > self.cache_bytes and self._cache:
                self.bytes -= sum(v.nbytes for v in self._cache.popitem(last=False)[1].values())
        else:
            self._cache.move_to_end(key)
        return {**example, PREPARED: prepared}

    def _prepare(self, example: dict) -> dict[str, np.ndarray]:
        if self._text is None:
            from models.text import TextEncoder

            self._text = TextEncoder(self.text_dir)
        one = {k: [v] if isinstance(v, str) else np.asarray(v)[None]
               for k, v in example.items() if k not in ("drop", PREPARED)}
        prepared = prepare_batch(one, text=self._text, size=self.size,
                                 max_text_len=self.max_text_len, pad_text=True,
                                 motion=self.motion, warp=self.warp)
        return {k: v[0] for k, v in prepared.items()}


def drop_masks(batch: dict, device) -> dict[str, Tensor] | None:
    """The batch's per-condition dropout flags as (B,) bool tensors (None: no dropout)."""
    drop = batch.get("drop")
    if drop is None:
        return None
    return {k: torch.as_tensor(_numpy(v)).to(device, torch.bool).reshape(-1)
            for k, v in drop.items()}
