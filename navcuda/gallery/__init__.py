"""Static HTML gallery of a direction set, and the names/marks it exports.

- :func:`build_gallery` writes ``index.html`` plus the strips (PNG) and previews (GIF) beside it;
  :func:`estimate_gallery` says beforehand what that takes (memory, disk, time).
- :func:`apply_names` merges an exported ``names.json`` into a :class:`DirectionSet`.
"""

from navcuda.gallery.build import build_gallery, estimate_gallery, value_label
from navcuda.gallery.names import NamesError, apply_names, load_names, set_digest, set_info

__all__ = [
    "NamesError",
    "apply_names",
    "build_gallery",
    "estimate_gallery",
    "load_names",
    "set_digest",
    "set_info",
    "value_label",
]
