"""Training objectives of the DiT: rectified flow matching, MotionCharacter's region-aware
weighting from optical flow, and its ID-consistency loss.

Conventions (the DiT contract): t in [0, 1] with 1 = pure noise,
x_t = (1 - t) * x0 + t * noise, and the model predicts the velocity v = noise - x0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.errors import InvalidInput

_EPS = 1e-8


def time_shift(t: Tensor, shift: float) -> Tensor:
    """SD3 / Wan resolution shift t' = s·t / (1 + (s - 1)·t): s > 1 moves time towards noise,
    where large latents keep more signal at a given t. s = 1 is the identity."""
    if shift <= 0:
        raise InvalidInput(f"shift must be > 0, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(
    batch: int,
    generator: torch.Generator | None = None,
    shift: float = 1.0,
    *,
    distribution: str = "logit_normal",
    mean: float = 0.0,
    std: float = 1.0,
) -> Tensor:
    """(batch,) training times t in (0, 1).

    `logit_normal` (SD3, Esser et al. 2024): t = sigmoid(mean + std·z), z ~ N(0, 1), which
    concentrates training on the middle times, where the velocity is hardest to predict.
    `uniform`: t ~ U(0, 1). Either is then passed through `time_shift(·, shift)` (the
    shifted-uniform schedule of Wan with `distribution="uniform"`); the sampler must use the
    same shift. Default shift 1 (none) suits the tiny latents of the local profile.
    """
    if batch < 1:
        raise InvalidInput(f"batch must be >= 1, got {batch}")
    device = generator.device if generator is not None else None
    if distribution == "logit_normal":
        if std <= 0:
            raise InvalidInput(f"std must be > 0, got {std}")
        z = torch.randn(batch, generator=generator, device=device)
        t = torch.sigmoid(mean + std * z)
    elif distribution == "uniform":
        t = torch.rand(batch, generator=generator, device=device)
    else:
        raise InvalidInput(f"distribution must be 'logit_normal' or 'uniform', got {distribution!r}")
    return time_shift(t, shift)


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) so it broadcasts against a (B, ...) tensor."""
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise InvalidInput(f"t must have shape ({like.shape[0]},), got {tuple(t.shape)}")
    return t.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def predicted_x0(x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """Clean latents implied by a velocity: x_t = x0 + t·v, so x0 = x_t - t·v.

    Used for the ID loss: decode `predicted_x0` with the VAE and compare identities. At large
    t the prediction is blurry, so callers usually apply the ID loss only at small t.
    """
    if x_t.shape != v.shape:
        raise InvalidInput(f"x_t {tuple(x_t.shape)} and v {tuple(v.shape)} differ in shape")
    return x_t - _per_sample(t, x_t) * v


LossWeighting = Literal["velocity", "clean"]


def time_weights(t: Tensor, weighting: LossWeighting = "velocity") -> Tensor:
    """(B,) per-sample weights of the velocity error at times t, shaped (B, 1, 1, 1, 1).

    "velocity": 1, the plain flow-matching loss. Its error is the clean-clip error over t,
    (x0 - x0_hat) / t, so it weighs the nearly clean times 1/t² more than the noisy ones.
    "clean": t², the error of the clean-clip estimate itself, equal at every t (the "x0"
    weighting of Esser et al. 2024, table 1). A small model trained with it spends its
    steps on what must come from the conditions (at large t) rather than on copying a
    nearly clean x_t at small t (docs/training.md#the-loss-weighting-clean)."""
    if weighting not in get_args(LossWeighting):
        raise InvalidInput(f"loss weighting must be one of {get_args(LossWeighting)}, got "
                           f"{weighting!r}")
    w = torch.ones_like(t) if weighting == "velocity" else t.square()
    return w.view(-1, 1, 1, 1, 1)


def flow_matching_loss(
    model_out: Tensor, x0: Tensor, noise: Tensor, weights: Tensor | None = None
) -> Tensor:
    """Mean squared error between the predicted velocity and the target noise - x0.

    `weights` broadcasts against the latents (e.g. `region_weights`, shape (B, 1, T', h, w))
    and multiplies each squared error before the mean. It is not renormalised here: weights
    of mean 1 keep the loss on the same scale as the unweighted one.
    """
    if not (model_out.shape == x0.shape == noise.shape):
        raise InvalidInput(
            f"model_out {tuple(model_out.shape)}, x0 {tuple(x0.shape)} and noise "
            f"{tuple(noise.shape)} must have the same shape"
        )
    err = (model_out.float() - (noise.float() - x0.float())).square()
    if weights is not None:
        try:
            err = err * weights.to(err.dtype)
        except RuntimeError as e:
            raise InvalidInput(
                f"weights {tuple(weights.shape)} do not broadcast to {tuple(err.shape)}"
            ) from e
        if err.shape != model_out.shape:
            raise InvalidInput(f"weights {tuple(weights.shape)} would enlarge the latents")
    return err.mean()


def flow_magnitude(frames: np.ndarray | Tensor) -> Tensor:
    """(B, T, H, W) optical-flow magnitude, pixels per frame, of uint8 RGB clips (B, T, H, W, 3).

    OpenCV DIS (fast preset) on luma between consecutive frames; frame t gets |flow(t-1 -> t)|
    and frame 0, which has no predecessor, gets frame 1's magnitude.
    """
    arr = frames.cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[-1] != 3:
        raise InvalidInput(
            f"frames must be uint8 (B, T, H, W, 3), got {arr.dtype} {tuple(arr.shape)}"
        )
    if arr.shape[1] < 2:
        raise InvalidInput(f"optical flow needs at least 2 frames, got {arr.shape[1]}")
    # One DIS object per call: OpenCV's DIS instances are not safe to share across threads.
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    out = np.empty(arr.shape[:4], np.float32)
    for b, clip in enumerate(arr):
        luma = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in clip]
        for i in range(1, len(luma)):
            flow = dis.calc(luma[i - 1], luma[i], None)
            out[b, i] = np.hypot(flow[..., 0], flow[..., 1])
        out[b, 0] = out[b, 1]
    return torch.from_numpy(out)


def _to_latent_grid(mag: Tensor, t_lat: int, h: int, w: int, stride: int) -> Tensor:
    """Average (B, T, H, W) onto the latent grid (B, T', h, w) the way the causal VAE groups
    frames: frame 0 alone, then each run of `stride` frames; pixels by s×s blocks."""
    b, t, hh, ww = mag.shape
    if t != 1 + (t_lat - 1) * stride:
        raise InvalidInput(
            f"{t} frames do not map to {t_lat} latent frames (need T = 1 + {stride}·(T' - 1))"
        )
    if hh % h or ww % w:
        raise InvalidInput(f"frame size {hh}x{ww} is not a multiple of the latent size {h}x{w}")
    rest = mag[:, 1:].reshape(b, t_lat - 1, stride, hh, ww).mean(2)
    per_frame = torch.cat([mag[:, :1], rest], dim=1)
    return F.avg_pool2d(per_frame, kernel_size=(hh // h, ww // w))


def region_weights(
    motion: Tensor | np.ndarray,
    latent_shape: tuple[int, ...],
    alpha: float = 1.0,
    *,
    threshold: float | None = None,
    temporal_stride: int,
) -> Tensor:
    """Per-latent loss weights (B, 1, T', h, w) emphasising high-motion regions.

    After MotionCharacter's region-aware loss (arXiv 2411.18281, Eq. 9-10). The paper's
    equation text was not available offline, so this follows its description (weight the
    diffusion loss by optical-flow motion of the target clip) in this form:

        M = |flow| averaged onto the latent grid, divided by its per-clip maximum (in [0, 1]),
            or, with `threshold`, the foreground mask [M > threshold];
        w = 1 + alpha·M, then divided by its per-clip mean so that the mean weight is 1
            (the loss keeps its scale; only its distribution over the clip changes).

    `motion` is either a flow magnitude (B, T, H, W) or uint8 RGB frames (B, T, H, W, 3), whose
    magnitude `flow_magnitude` computes. `latent_shape` ends with (T', h, w), with
    T' = 1 + (T - 1)/temporal_stride (the VAE's temporal factor, 4 as in Wan) and h = H/s,
    w = W/s. A static clip gets uniform weights 1.
    """
    if alpha < 0:
        raise InvalidInput(f"alpha must be >= 0, got {alpha}")
    if temporal_stride < 1:
        raise InvalidInput(f"temporal_stride must be >= 1, got {temporal_stride}")
    if threshold is not None and not 0 <= threshold < 1:
        raise InvalidInput(f"threshold must be in [0, 1), got {threshold}")
    if len(latent_shape) < 3:
        raise InvalidInput(f"latent_shape must end with (T', h, w), got {tuple(latent_shape)}")
    is_frames = motion.ndim == 5 and motion.shape[-1] == 3
    mag = flow_magnitude(motion) if is_frames else torch.as_tensor(motion, dtype=torch.float32)
    if mag.ndim != 4:
        raise InvalidInput(
            f"motion must be (B, T, H, W) magnitudes or (B, T, H, W, 3) frames, got {tuple(mag.shape)}"
        )
    t_lat, h, w = latent_shape[-3:]
    m = _to_latent_grid(mag.float(), t_lat, h, w, temporal_stride)
    peak = m.flatten(1).amax(1).view(-1, 1, 1, 1)
    m = m / peak.clamp_min(_EPS)  # a static clip has m = 0 everywhere, hence uniform weights
    if threshold is not None:
        m = (m > threshold).float()
    weights = 1 + alpha * m
    return (weights / weights.mean(dim=(1, 2, 3), keepdim=True)).unsqueeze(1)


def id_consistency_loss(
    generated_frames: Tensor,
    reference: Tensor,
    encoder: Callable[[Tensor], Tensor],
    *,
    num_frames: int | None = None,
) -> Tensor:
    """1 - cos(encoder(frame), encoder(reference)), averaged over frames and batch.

    After MotionCharacter's ID-consistency loss (arXiv 2411.18281, Eq. 4), which compares
    face-identity embeddings of generated frames with the reference's; its exact text was not
    available offline. The encoder is injected, not fixed: the repo's face-identity network
    (dlib) is not differentiable, so training passes a frozen copy of the model's own learned
    appearance encoder. `encoder` maps (N, 3, H, W) in [-1, 1] to (N, D).

    generated_frames: (B, 3, T, H, W) in [-1, 1], typically the VAE decode of `predicted_x0`;
    gradients flow back through them. reference: (B, 3, H, W) in [-1, 1]; its embedding is a
    target and is computed without gradient. num_frames: evenly spaced frames to embed (all
    when None), to bound the encoder's cost on long clips.
    """
    if generated_frames.ndim != 5 or generated_frames.shape[1] != 3:
        raise InvalidInput(f"generated_frames must be (B, 3, T, H, W), got {tuple(generated_frames.shape)}")
    b, _, t, h, w = generated_frames.shape
    if reference.shape != (b, 3, h, w):
        raise InvalidInput(f"reference must be ({b}, 3, {h}, {w}), got {tuple(reference.shape)}")
    if num_frames is not None and not 1 <= num_frames <= t:
        raise InvalidInput(f"num_frames must be in [1, {t}], got {num_frames}")
    k = t if num_frames is None else num_frames
    idx = torch.linspace(0, t - 1, k).round().long().to(generated_frames.device)
    frames = generated_frames.index_select(2, idx).transpose(1, 2).reshape(b * k, 3, h, w)
    gen = encoder(frames)
    with torch.no_grad():
        ref = encoder(reference)
    if gen.ndim != 2 or ref.shape != (b, gen.shape[1]):
        raise InvalidInput(f"encoder must return (N, D), got {tuple(gen.shape)} and {tuple(ref.shape)}")
    ref = ref.repeat_interleave(k, dim=0)  # frame i of clip j is compared with reference j
    return (1 - F.cosine_similarity(gen.float(), ref.float(), dim=1)).mean()
