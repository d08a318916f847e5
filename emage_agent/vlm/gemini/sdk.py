"""The one import of the google-genai SDK: the client and the wire format take it from here.

Why one module: the SDK is the heaviest dependency of the VLM side and changes its surface between
releases; one place to see (and pin) what EMage uses of it.
"""

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

__all__ = ["genai", "genai_errors", "types"]
