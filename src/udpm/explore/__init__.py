"""``udpm explore``: the latent space in a web page, live.

The library part needs no web framework: :mod:`~udpm.explore.directions` (each level's
principal directions, the sliders), :mod:`~udpm.explore.frames` (an image and its per-level
previews for a latent), :mod:`~udpm.explore.session` (one page's state and edits) and
:mod:`~udpm.explore.worker` (one page's thread of work, coalescing slider renders).
:mod:`~udpm.explore.app` is the Starlette app over them (``pip install 'udpm[explore]'``).

>>> import udpm
>>> from udpm.explore.app import create_app
>>> app = create_app(udpm.load())   # serve with uvicorn.run(app, host="127.0.0.1", port=7860)
"""

from udpm.explore.directions import LevelDirections, level_directions, move
from udpm.explore.frames import Frame, render

__all__ = ["Frame", "LevelDirections", "level_directions", "move", "render"]
