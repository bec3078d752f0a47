"""udpm: fast diffusion models, headed by UDPM (Upsampling Diffusion Probabilistic Models)."""

__version__ = "0.1.0"
