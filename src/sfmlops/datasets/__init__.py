"""Data sets shipped inside the package, so the demo and the images work offline."""

from pathlib import Path

ROSSMANN_DIR = Path(__file__).with_name("rossmann")
"""The Rossmann Store Sales files (see rossmann/README.md)."""
