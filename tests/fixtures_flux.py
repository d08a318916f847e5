"""Fixtures for the tiny random-weight FLUX.1 family (filled in with the executor)."""
