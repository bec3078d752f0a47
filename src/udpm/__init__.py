"""udpm: fast diffusion models, headed by UDPM (Upsampling Diffusion Probabilistic Models).

>>> import udpm
>>> model = udpm.load()                 # the emoji model shipped with the package
>>> images = model.sample(16, seed=0)   # (16, 3, 32, 32) in [-1, 1], 3 network calls each
"""

from udpm import noise, operators, processes, samplers
from udpm.errors import UDPMError
from udpm.pipeline import Pipeline, load

__version__ = "0.1.0"
__all__ = ["Pipeline", "UDPMError", "load", "noise", "operators", "processes", "samplers"]
