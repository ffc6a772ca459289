"""``navcuda studio``: an interactive editor in the browser (``pip install 'navcuda[studio]'``).

- :mod:`navcuda.studio.session`: the model side (sliders, edit states, rendering through edit
  recipes, photo projection, recipe loading, exports; named errors), usable without a browser;
- :mod:`navcuda.studio.exports`: PNG, GIF / MP4 of the edit's sweep, the recipe;
- :mod:`navcuda.studio.app`: the Gradio UI and :func:`~navcuda.studio.app.launch` (imports
  Gradio, so it is imported only when the studio starts).

The studio uses the core (:mod:`navcuda.recipe`, :mod:`navcuda.shift`); nothing in the core
imports it.
"""

from navcuda.studio import session as _session
from navcuda.studio.session import *  # noqa: F403 (the names of its __all__)

__all__ = list(_session.__all__)
