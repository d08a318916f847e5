"""A tiny random-weight FLUX.1 family on disk, in the hub's layout: for `--demo` and for tests without a GPU.

The executor loads it through exactly the ``from_pretrained`` calls it uses for the real
models, so the tests exercise the production loading, sharing and residency code. Sizes
follow diffusers' own Flux tests: a one-block VAE with two latent channels (scale factor 1),
so the transformers take 8 (base), 16 (control) and 20 (fill) packed input channels.

Tokenizers are built here from scratch (nothing is downloaded): a byte-level CLIP BPE
vocabulary and a small Unigram T5 vocabulary. The CLIPSeg decoder's last layer is zeroed so
every pixel's probability is exactly 0.5: tests then choose a threshold to get a full or an
empty segmentation, deterministically, while the real CLIPSeg code still runs.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

from emage_agent.core.settings import Settings

VARIANTS = ("base", "canny", "depth", "fill", "kontext")
# Kontext reads the image as extra tokens beside the noise, not as extra channels: the base's 8.
TRANSFORMER_IN_CHANNELS = {"base": 8, "canny": 16, "depth": 16, "fill": 20, "kontext": 8}


@dataclass(frozen=True)
class TinyFamily:
    """Where each tiny model lives; every path is a directory in the hub's layout."""

    root: Path
    base: Path
    canny: Path
    depth: Path
    fill: Path
    kontext: Path
    depth_estimator: Path
    segmenter: Path
    detector: Path

    def settings(self, **overrides: object) -> Settings:
        """Settings that point every model at this family, on the CPU in float32, ignoring any .env.

        The optional capabilities (the Kontext edit, the detector) stay off unless a test turns them on
        (``kontext_model=str(family.kontext)``), so the loop's default tool choices are those of the core tools.
        """
        values: dict[str, object] = {
            "kontext_model": "none",
            "detector": "none",
            "base_model": str(self.base),
            "canny_model": str(self.canny),
            "depth_model": str(self.depth),
            "fill_model": str(self.fill),
            "depth_estimator": str(self.depth_estimator),
            "segmenter": str(self.segmenter),
            "device": "cpu",
            "dtype": "float32",
            **overrides,
        }
        return Settings(_env_file=None, **values)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte-to-character table, which byte-level BPE vocabularies use."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    visible += list(range(ord("®"), ord("ÿ") + 1))
    chars = visible[:]
    extra = 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(visible, chars, strict=True)}


def clip_tokenizer():
    """A byte-level CLIP tokenizer: every byte a token, alone or word-final, and a few merges."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab[token] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "n</w>")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def t5_tokenizer():
    """A small Unigram T5 tokenizer: letters, digits and punctuation, with and without '▁'."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    symbols = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    pieces += [("▁" + s, -3.0) for s in symbols] + [(s, -4.0) for s in symbols]
    pieces += [("▁the", -2.5), ("▁a", -2.5), ("▁and", -2.5), ("▁of", -2.5)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _flux_components(tokenizer, tokenizer_2):
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_act="gelu",
        )
    )
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
        )
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=2,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer_2,
    }


def _transformer(in_channels: int, seed: int):
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=8,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    )


def _depth_estimator(folder: Path) -> None:
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    backbone = Dinov2Config(
        image_size=28,
        patch_size=14,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        out_indices=[1, 2],
        reshape_hidden_states=False,
        apply_layernorm=True,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=8,
        neck_hidden_sizes=[4, 4],
        fusion_hidden_size=8,
        head_hidden_size=4,
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessorPil(
        size={"height": 28, "width": 28},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_pad=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)


def _segmenter(folder: Path, tokenizer) -> None:
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    config = CLIPSegConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=16,
        extract_layers=[0, 1],
        reduce_dim=8,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
    )
    torch.manual_seed(0)
    model = CLIPSegForImageSegmentation(config)
    with torch.no_grad():
        last = model.decoder.transposed_convolution
        last.weight.zero_()
        last.bias.zero_()
    model.save_pretrained(folder)
    image_processor = ViTImageProcessorPil(
        size={"height": 32, "width": 32},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def _detector(folder: Path, tokenizer) -> None:
    """A tiny OWLv2 whose class head is constant: every patch's box scores sigmoid(3) = 0.95 for the first label.

    So on a 32x32 input (two 16-pixel patches a side) the detector finds exactly four boxes of the first label,
    deterministically, while the real OWLv2 code runs end to end.
    """
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor
    from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil

    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "max_position_embeddings": 16,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "image_size": 32,
        "patch_size": 16,
    }
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=16))
    with torch.no_grad():
        head = model.class_head
        for layer in (head.dense0, head.logit_shift, head.logit_scale):
            layer.weight.zero_()
            layer.bias.zero_()
        head.logit_shift.bias.fill_(3.0)
    model.save_pretrained(folder)
    image_processor = Owlv2ImageProcessorPil(size={"height": 32, "width": 32})
    clip = clip_tokenizer()
    clip.model_max_length = 16
    Owlv2Processor(image_processor=image_processor, tokenizer=clip).save_pretrained(folder)


def build_tiny_family(root: Path) -> TinyFamily:
    """Write the family under ``root`` (idempotent: a finished family is reused as it is)."""
    from diffusers import FluxControlPipeline, FluxFillPipeline, FluxKontextPipeline, FluxPipeline

    root = Path(root)
    family = TinyFamily(
        root=root,
        base=root / "FLUX.1-dev",
        canny=root / "FLUX.1-Canny-dev",
        depth=root / "FLUX.1-Depth-dev",
        fill=root / "FLUX.1-Fill-dev",
        kontext=root / "FLUX.1-Kontext-dev",
        depth_estimator=root / "depth-anything",
        segmenter=root / "clipseg",
        detector=root / "owlv2",
    )
    done = root / "done.json"
    if done.is_file() and family.kontext.is_dir() and family.detector.is_dir():
        return family

    tokenizer = clip_tokenizer()
    components = _flux_components(tokenizer, t5_tokenizer())
    pipelines = {
        "base": FluxPipeline,
        "canny": FluxControlPipeline,
        "depth": FluxControlPipeline,
        "fill": FluxFillPipeline,
        "kontext": FluxKontextPipeline,
    }
    for seed, variant in enumerate(VARIANTS):
        transformer = _transformer(TRANSFORMER_IN_CHANNELS[variant], seed)
        pipeline = pipelines[variant](transformer=transformer, **components)
        pipeline.save_pretrained(getattr(family, variant))
    _depth_estimator(family.depth_estimator)
    _segmenter(family.segmenter, tokenizer)
    _detector(family.detector, tokenizer)
    done.write_text(json.dumps({"variants": list(VARIANTS)}), encoding="utf-8")
    return family


if __name__ == "__main__":
    import sys

    print(build_tiny_family(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-flux-family")))


def demo_family(cache: Path | None = None) -> TinyFamily:
    """The family ``--demo`` runs on, built once into the user's cache (``EMAGE_DEMO_CACHE`` to move it)."""
    import os

    if cache is None:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache = Path(os.environ.get("EMAGE_DEMO_CACHE") or base / "emage" / "demo-models")
    return build_tiny_family(cache)
