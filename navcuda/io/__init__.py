"""Reading and writing files: direction sets and the official code's direction files."""

from navcuda.io.official import load_official_direction

__all__ = ["load_official_direction"]
