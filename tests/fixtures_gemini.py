"""Fixtures for the fake Gemini endpoint (filled in with the Gemini layer)."""
