"""Helpers shared by the tests: import them from here, never from a conftest.py or a test module."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's top folder."""
