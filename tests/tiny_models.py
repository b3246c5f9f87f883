"""Small, randomly initialised models and synthetic inputs for tests and benchmarks.

A freshly built MotionDiT outputs exactly zero: its adaLN-Zero tables and every condition's
output projection start at zero, so no input, and no condition, changes anything. A test on
such a model passes even when a condition is wired to nothing. `perturb_zero_init` gives those
parameters small random values, as a few training steps would, so that everything counts.
`publish_tiny_student` registers one like the distill flow does (for the registry and serving
paths): what is under test there is the path a model takes, not what it generates.
`random_conditions` and `collate` make a DiT's conditions and a dataset batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.conditions import DROP_KEYS, FACE_CODE_DIM, FACE_POINTS, IDENTITY_DIM, Conditions
from models.dit import MotionDiT


def perturb_zero_init(model: nn.Module, seed: int = 0, scale: float = 0.05,
                      skip: tuple[str, ...] = ()) -> nn.Module:
    """Give every all-zero parameter (adaLN-Zero tables, zero-initialised output projections
    and biases, zero null embeddings) seeded N(0, scale²) values, in place; parameters whose
    names start with one of `skip` are left as they are. Returns the model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith(skip) and not p.any():
                noise = torch.randn(p.shape, generator=generator) * scale
                p.copy_(noise.to(p.device, p.dtype))
    return model


def publish_tiny_student(settings, *, frames: int = 9, steps: int = 2, alias: str = "champion",
                         tags: dict[str, str] | None = None) -> tuple[int, MotionDiT]:
    """Register a random tiny MotionDiT (+ its VideoVAE) as a student version at `alias`."""
    # Imported here: the model tests that only need perturb_zero_init do without MLflow.
    from flows.profiles import profile_config
    from flows.pyfunc_model import log_pipeline_model
    from flows.registry import build_model, model_meta, register_version, set_alias
    from flows.settings import STUDENT_MODEL
    from flows.tracking import start_run

    profile = profile_config("tiny")
    torch.manual_seed(0)
    vae_meta = model_meta(profile, "vae", 0)
    meta = {**model_meta(profile, "steps", 3), "frames": frames, "sampler_steps": steps}
    vae, dit = build_model(vae_meta), perturb_zero_init(build_model(meta))
    with start_run(settings, "distillation", run_name="tiny-student") as run:
        # what the train worker (logged model) and flow (registration) do
        info = log_pipeline_model({"dit": (dit, meta), "vae": (vae, vae_meta)})
        version = register_version(
            settings, info.model_uri, STUDENT_MODEL,
            tags={"run_id": run.info.run_id, "component": "dit", **(tags or {})})
    set_alias(settings, STUDENT_MODEL, alias, version)
    return version, dit


def random_conditions(config, batch_size: int, latent_frames: int, latent_size: int, *,
                      library: int = 0, text_len: int = 6, seed: int = 0,
                      device=None) -> Conditions:
    """Random conditions of the right shapes for a `models.dit.DiTConfig` (tests and
    benchmarks): pixel frames 1 + temporal_factor (T' - 1), side latent_size x spatial_factor,
    R = 1 + library reference frames."""
    g = torch.Generator().manual_seed(seed)
    b, c = batch_size, config.latent_channels
    frames = 1 + config.temporal_factor * (latent_frames - 1)
    side = latent_size * config.spatial_factor

    def rand(*shape) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    reference = torch.randn(b, c, 1 + library, latent_size, latent_size, generator=g)
    return Conditions(
        reference_latents=reference,
        body_maps=rand(b, 3, frames, side, side), hand_maps=rand(b, 3, frames, side, side),
        face_codes=torch.randn(b, frames, FACE_POINTS, FACE_CODE_DIM, generator=g) * 0.05,
        identity_embedding=torch.randn(b, IDENTITY_DIM, generator=g) * 0.1,
        identity_valid=torch.ones(b, dtype=torch.bool),
        reference_pixels=rand(b, 3, side, side) * 2 - 1,
        subject_library=rand(b, library, 3, side, side) * 2 - 1,
        subject_mask=torch.ones(b, library, dtype=torch.bool),
        text_tokens=torch.randn(b, text_len, config.text_dim, generator=g),
        text_mask=torch.ones(b, text_len, dtype=torch.bool),
        action_embedding=torch.nn.functional.normalize(
            torch.randn(b, config.text_dim, generator=g), dim=-1),
        motion_intensity=rand(b) * 0.02,
        camera=torch.cat([rand(b, frames, 2) * 0.2 - 0.1, 1 + rand(b, frames, 1) * 0.5], -1),
        still_latents=reference[:, :, :1].expand(-1, -1, latent_frames, -1, -1).clone(),
    ).to(device)


def count_parameters(config) -> int:
    """Parameters of a MotionDiT (built on the meta device: no memory, any size)."""
    with torch.device("meta"):
        return sum(p.numel() for p in MotionDiT(config).parameters())


def collate(clips, cross: bool = True) -> dict:
    """What the dataset's DataLoader yields for these clips (target i, driver i+1)."""
    drivers = clips[1:] + clips[:1] if cross else clips
    return {
        "frames": torch.from_numpy(np.stack([c.frames for c in clips])),
        "keypoints": torch.from_numpy(np.stack([c.keypoints for c in clips])),
        "driver_keypoints": torch.from_numpy(np.stack([c.keypoints for c in drivers])),
        "reference": torch.from_numpy(np.stack([c.reference_image for c in clips])),
        "reference_keypoints": torch.from_numpy(np.stack([c.reference_keypoints
                                                          for c in clips])),
        "camera": torch.from_numpy(np.stack([
            np.stack([c.camera.pan_x, c.camera.pan_y, c.camera.zoom], 1) for c in clips]
        ).astype(np.float32)),
        "motion_intensity": torch.tensor([0.004, 0.009]),
        "caption": [c.caption for c in clips],
        "action_phrase": [c.action_phrase for c in clips],
        "drop": {k: torch.tensor([False, k == "face"]) for k in DROP_KEYS},
    }


# A Wan-architecture checkpoint the size of the `debug` DiT, for the `base` profile's code
# path: its run config with these sizes (BASE_CPU) reads it like the real Wan2.1 folder.
BASE_CPU = {"resolution": 64,  # clips curated at 128 px like tiny's: the filters need detail
            "clip": {"size": 128, "frames": 17, "fps": 12.0},
            "vae": {"latent_channels": 4},
            "dit": {"dim": 32, "depth": 2, "heads": 2, "ffn_dim": 64, "text_dim": 32,
                    "freq_dim": 32, "face_every": 1, "pose_width": 4, "appearance_width": 4,
                    "appearance_grid": 2, "identity_tokens": 2, "library_tokens": 2,
                    "face_tokens": 2},
            "sampling": {"teacher_steps": 2, "student_steps": 2},
            "distill": {"segment_steps": 4},
            # torch.compile's CPU code generation takes minutes per stage (measured: stage 1
            # of test_base_pipeline 5 min with it); activation checkpointing stays on
            "train": {"compile": False}}


def write_tiny_wan(folder, run, seed: int = 0):
    """A random Wan2.x checkpoint in diffusers layout (transformer/, vae/, text_encoder/,
    tokenizer/) with `run`'s DiT, VAE and text sizes: what `MC_TRAIN__WAN_WEIGHTS` names.
    The tokenizer is a byte-level BPE trained here on a few captions (any text encodes),
    standing in for umT5's SentencePiece model, which is not available offline."""
    from pathlib import Path

    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    from models.convert_wan import wan_config

    folder = Path(folder)
    torch.manual_seed(seed)
    WanTransformer3DModel(**wan_config(run.dit)).save_pretrained(folder / "transformer")
    z = run.vae.latent_channels
    AutoencoderKLWan(base_dim=8, z_dim=z, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                     temperal_downsample=[False, True, True],
                     latents_mean=[0.0] * z, latents_std=[1.0] * z).save_pretrained(folder / "vae")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        ["a person waving", "a character walks and claps", "jump, bow, dance in place"],
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>",
                                        eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(folder / "tokenizer")
    UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=run.dit.text_dim, d_kv=8,
                                d_ff=64, num_layers=2, num_heads=4)).save_pretrained(
        folder / "text_encoder")
    return folder
