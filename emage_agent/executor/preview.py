"""A cheap picture of the image forming, from FLUX's packed latents mid-diffusion (no VAE, no download).

FLUX's 16 latent channels map to RGB through a fixed linear approximation (the factors ComfyUI uses for
its latent previews); models with another channel count (the tiny test family) get their channels
spread over R, G and B, normalised, which still shows shapes forming. TAEF1 is not used: it would
have to be downloaded.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from emage_agent.core.ports import png_bytes

FLUX_RGB = (
    (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778),
)  # fmt: skip
FLUX_BIAS = (-0.0329, -0.0718, -0.0851)
MAX_SIDE = 256  # a preview is a thumbnail: small to encode, small to send


def unpack(latents: Any, height: int, width: int, vae_scale: int) -> Any | None:
    """``(B, seq, C*4)`` packed latents as ``(C, H/8, W/8)`` of the first image; ``None`` when the shape differs."""
    if latents.ndim != 3 or latents.shape[-1] % 4:
        return None
    h2, w2 = int(height) // (vae_scale * 2), int(width) // (vae_scale * 2)
    batch, seq, packed = latents.shape
    if seq != h2 * w2:
        return None
    channels = packed // 4
    x = latents[:1].float().view(1, h2, w2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(channels, h2 * 2, w2 * 2)


def to_rgb(latent: Any) -> Image.Image:
    """A ``(C, h, w)`` latent as an RGB picture, upscaled to at most ``MAX_SIDE`` a side."""
    import torch

    channels = latent.shape[0]
    if channels == len(FLUX_RGB):
        factors = torch.tensor(FLUX_RGB, dtype=latent.dtype)
        rgb = torch.einsum("chw,ck->khw", latent, factors) + torch.tensor(FLUX_BIAS).view(3, 1, 1)
        rgb = ((rgb + 1.0) / 2.0).clamp(0, 1)
    else:  # any other latent: channels spread over R, G, B, each normalised to 0..1
        rgb = torch.stack(
            [latent[[i for i in range(channels) if i % 3 == k] or [k % channels]].mean(0) for k in range(3)]
        )
        low = rgb.amin(dim=(1, 2), keepdim=True)
        rgb = (rgb - low) / (rgb.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-6)
    array = (rgb.permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
    image = Image.fromarray(array, "RGB")
    scale = max(1, MAX_SIDE // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def preview_png(pipe: Any, latents: Any, height: int | None, width: int | None) -> bytes | None:
    """PNG bytes of the preview, or ``None`` when the latents are not FLUX-packed for this size."""
    if height is None or width is None:
        return None
    latent = unpack(latents.detach().cpu(), height, width, int(pipe.vae_scale_factor))
    return None if latent is None else png_bytes(to_rgb(latent))
