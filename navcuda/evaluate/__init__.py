"""The paper's experiments as functions: each returns numbers and can draw a figure.

- :mod:`navcuda.evaluate.locality`: per-pixel change maps of an edit and a locality score.
"""

from navcuda.evaluate.locality import LocalityResult, locality_map, locality_score

__all__ = ["LocalityResult", "locality_map", "locality_score"]
