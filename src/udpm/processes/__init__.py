"""Forward processes: marginals and posteriors, no networks and no optimisers."""

from udpm.processes.upsampling import (
    PAPER_ALPHAS,
    PAPER_SIGMAS,
    UpsamplingProcess,
    process_from_config,
)

__all__ = ["PAPER_ALPHAS", "PAPER_SIGMAS", "UpsamplingProcess", "process_from_config"]
