"""DDGAN's training pairs and fakes (Xiao et al. 2022, Sec. 3-4; NVlabs ``train_ddgan.py``).

Indices follow :class:`~udpm.processes.gaussian.DiscreteGaussianProcess`: ``t = 0..T-1``
is the paper's step ``t + 1`` and index ``-1`` is the data.

- The **real pair** is drawn jointly from ``q(x_{t-1}, x_t | x_0)``: ``x_{t-1} ~
  q(x_{t-1} | x_0)`` (``x_0`` itself when ``t = 0``), then one forward step ``x_t ~
  q(x_t | x_{t-1})`` (NVlabs' ``q_sample_pairs``). Two independent marginals would lose the
  correlation ``Cov(x_{t-1}, x_t) = sqrt(1 - β_t) Var(x_{t-1})`` that D must learn.
- The **fake** ``x'_{t-1} ~ q(x_{t-1} | x_t, x̂_0)`` is the Gaussian posterior at the
  generator's ``x̂_0 = G(x_t, z, t)`` (eq. 9 of the paper): the generator never outputs
  ``x_{t-1}`` directly. At ``t = 0`` its variance is 0 and the fake is ``x̂_0``.
"""

from __future__ import annotations

import torch


def posterior_sample(process, x_t, x0, t, noise=None, t_prev=None) -> torch.Tensor:
    """``x_{t-1} ~ q(x_{t-1} | x_t, x_0)``; the one place that knows the process's argument order
    (``processes/contract.py``: the noisy sample, what it is conditioned on, the times, noise)."""
    return process.posterior_sample(x_t, x0, t, t_prev=t_prev, noise=noise)


def joint_pair(process, x0, t, noise_prev, noise_step) -> tuple[torch.Tensor, torch.Tensor]:
    """The real pair ``(x_{t-1}, x_t)`` from ``q(x_{t-1}, x_t | x_0)``.

    Args:
        process: a ``DiscreteGaussianProcess``.
        x0: (N, C, H, W) data.
        t: (N,) long indices in ``0..T-1``.
        noise_prev: (N, C, H, W) ``ε`` of ``x_{t-1} = sqrt(ᾱ_{t-1}) x_0 + sqrt(1-ᾱ_{t-1}) ε``
            (unused in the rows with ``t = 0``, where ``x_{t-1} = x_0``).
        noise_step: (N, C, H, W) ``z`` of ``x_t = sqrt(1-β_t) x_{t-1} + sqrt(β_t) z``.
    """
    t = torch.as_tensor(t, device=x0.device)
    # q_sample takes indices 0..T-1 only; rows with t = 0 use x_0 itself.
    prev = process.q_sample(x0, (t - 1).clamp(min=0), noise=noise_prev)
    x_prev = torch.where((t == 0).view(-1, *[1] * (x0.ndim - 1)), x0, prev)
    return x_prev, process.q_step(x_prev, t, noise=noise_step)


def fake_prev(process, x_t, x0_hat, t, noise) -> torch.Tensor:
    """The fake ``x'_{t-1} ~ q(x_{t-1} | x_t, x̂_0)``, differentiable in ``x̂_0``."""
    return posterior_sample(process, x_t, x0_hat, t, noise=noise)


def pair_input(x_prev: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """D's input: the channels of ``x_{t-1}`` then of ``x_t``, (N, 2C, H, W) (NVlabs' order)."""
    return torch.cat([x_prev, x_t], dim=1)


def real_logits_r1(D, x_prev, x_t, time, class_labels, with_r1: bool):
    """D's logits on the real pair and, when ``with_r1``, R1 on the real ``x_{t-1}`` alone.

    NVlabs differentiates ``D(x_{t-1}, t, x_t)`` with respect to ``x_{t-1}`` only: the
    conditioning image ``x_t`` is held fixed (it is not what D judges).

    Returns:
        ``(logits (N,), penalty)``; ``penalty`` is ``E ||∇_{x_{t-1}} D||²`` or None.
    """
    from udpm.objectives.adversarial import r1_penalty

    x_prev = x_prev.detach().requires_grad_(with_r1)
    logits = D(pair_input(x_prev, x_t.detach()), time, class_labels).float()
    return logits, r1_penalty(logits, x_prev) if with_r1 else None
