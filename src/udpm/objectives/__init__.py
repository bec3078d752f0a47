"""Training objectives: UDPM's per-level terms and the Gaussian diffusion losses."""
