"""The tiny random-weight FLUX.1 family now ships with the package (``--demo`` builds it); tests import it here."""

from emage_agent.executor.tiny import VARIANTS, TinyFamily, build_tiny_family, clip_tokenizer, t5_tokenizer

__all__ = ["VARIANTS", "TinyFamily", "build_tiny_family", "clip_tokenizer", "t5_tokenizer"]
