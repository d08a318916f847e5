"""Test-wide settings: no network, no hub, deterministic CPU threads.

Fixtures live in their own modules, loaded here as plugins.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")
for _secret in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "HF_TOKEN", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(_secret, None)

pytest_plugins = ["tests.support.fixtures_flux", "tests.support.fixtures_gemini", "tests.support.fixtures_openai"]
