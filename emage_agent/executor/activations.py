"""Activation memory of one FLUX.1 call as a function of its size: the planner's headroom.

A call has two phases that never overlap: denoising (the transformer's activations grow with the
token count: one per 16x16 pixel patch, doubled for Kontext, whose reference image joins the
sequence, plus T5's 512) and the VAE decode (its activations grow with the pixel count). The
peak is the larger of the two plus the allocator's slack.

Above ``VAE_TILE_ABOVE_PIXELS`` the executor decodes in tiles (diffusers' ``enable_tiling``; the
FLUX VAE's tiles are 1024 px, blended at the seams), so the decode never holds more than one
1024x1024 tile's activations: a 2048x2048 image costs the same decode memory as a 1024x1024 one.

Calibration: published peaks of FLUX.1-dev at 1024x1024 (diffusers' quantization-backends
measurements on an H100) sit 4.5-4.7 GiB above the loaded weights for bf16, int8, fp8 and nf4
alike: the VAE decode's ~4.1 GiB and the slack, with the transformer's activations (~0.8 GiB
at 4,608 tokens, SDPA/flash attention, one block alive at a time) hidden under it.
"""

from __future__ import annotations

GiB = 1024**3
PATCH = 16  # pixels per token side: the VAE's 8x downsampling, then FLUX's 2x2 patches
TEXT_TOKENS = 512  # FLUX.1-dev's T5 context
# Allocator slack: cuBLAS/cuDNN workspaces and the caching allocator's rounding.
SLACK_BYTES = GiB // 2
# The transformer at work on one token in bfloat16: hidden states, fused QKV, RoPE's float32 q/k
# copies and the 4x MLP of the block running (inference keeps one block's intermediates).
DENOISE_BYTES_PER_TOKEN = 192 * 1024
# The VAE decoder's up blocks at full resolution (128-256 channels, GroupNorm, conv workspaces).
VAE_DECODE_BYTES_PER_PIXEL = 4096 + 128
VAE_TILE_ABOVE_PIXELS = 1024 * 1024
VAE_TILE_PIXELS = 1024 * 1024


def tokens(width: int, height: int, kontext: bool = False) -> int:
    """The transformer's sequence length for a ``width`` x ``height`` image (Kontext: twice the image)."""
    image = (width // PATCH) * (height // PATCH)
    return image * (2 if kontext else 1) + TEXT_TOKENS


def vae_tiled(width: int, height: int) -> bool:
    """Whether the executor decodes (and Kontext encodes) this size in tiles."""
    return width * height > VAE_TILE_ABOVE_PIXELS


def activation_bytes(width: int = 1024, height: int = 1024, kontext: bool = False) -> int:
    """Peak bytes above the weights for one call at this size: the planner's headroom."""
    pixels = min(width * height, VAE_TILE_PIXELS) if vae_tiled(width, height) else width * height
    denoise = tokens(width, height, kontext) * DENOISE_BYTES_PER_TOKEN
    decode = pixels * VAE_DECODE_BYTES_PER_PIXEL
    return SLACK_BYTES + max(denoise, decode)
