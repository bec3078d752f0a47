"""Latent diffusion (Rombach et al. 2022): DDPM on a frozen KL autoencoder's scaled latent.

Stage 2 of two (stage 1 is ``udpm.methods.autoencoder``). The generator is one
:class:`~udpm.networks.latent_diffusion.LatentDiffusion`: the U-Net, the frozen autoencoder
and the latent's scale ``s = 1/std(z)`` and mean ``m``, measured on the first training batch.
Only the U-Net is optimised; the autoencoder's weights stay bit-identical.
"""

from __future__ import annotations

import torch

from udpm.config.settings import LDMSettings
from udpm.errors import UDPMError
from udpm.methods.base import Method
from udpm.methods.spec import MethodSpec, SampleResult
from udpm.objectives.denoiser import Denoiser


class LDMMethod(Method):
    """``G`` is the whole :class:`LatentDiffusion`; its optimiser holds the U-Net's weights only.

    ``noise_gen`` draws the encoder's posterior noise, ``t`` and the diffusion noise of the
    whole global batch, seeded alike on every rank (``Method.rank_rows``).
    """

    def __init__(self, config, device, num_classes=0, autocast_dtype=None, warn=None):
        super().__init__(config, device, num_classes, autocast_dtype)
        self.settings = config.settings
        self.process = build_process(config)
        G = build_generator(config, num_classes)
        G.autoencoder.load_state_dict(load_autoencoder_state(config.settings))
        self.modules["G"] = G.to(self.device)
        self._make_optimizers()  # over parameters that require grad: the U-Net's
        self.noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1)

    def _randn(self, shape, n: int) -> torch.Tensor:
        return self.rank_rows(lambda m: torch.randn((m, *shape), generator=self.noise_gen), n)

    def step(self, x0: torch.Tensor, labels, step: int) -> dict:
        from udpm.networks.latent_diffusion import latent_sums
        from udpm.objectives.gaussian import diffusion_loss
        from udpm.train.distributed import all_sum

        G, n = self.modules["G"], x0.shape[0]
        shape = G.latent_shape(x0.shape[1:])
        z = G.raw_latent(x0, self._randn(shape, n))
        if not G.latent_measured:  # the first batch of the run, over all ranks
            G.measure_latent(all_sum(latent_sums(z)).cpu())
        z0 = G.scale(z)
        t = self.rank_rows(lambda m: self.process.sample_times(m, generator=self.noise_gen), n)
        noise = self._randn(shape, n)
        parts = self.micro_batches(z0, labels, t, noise)

        def micro_loss(i):
            z0_i, labels_i, t_i, noise_i = parts[i]
            with self.autocast():
                loss = diffusion_loss(Denoiser(self.net("G"), "eps"), self.process, z0_i,
                                      labels_i, t=t_i, noise=noise_i)  # fmt: skip
            return loss.float(), {}

        logs = {"loss_g": self.optimise("G", micro_loss, "the latent diffusion loss")["loss"]}
        if step == 0:
            logs["latent_scale"] = float(G.latent_scale)
        return logs


def load_autoencoder_state(settings) -> dict:
    """The stage-1 weights, after checking the file is the one the config recorded."""
    from udpm.checkpoint import load_model
    from udpm.config.autoencoder import autoencoder_file, sha256_file

    if settings.autoencoder is None:
        raise UDPMError("ldm trains on a stage-1 model: pass --autoencoder CKPT")
    file, _ = autoencoder_file(settings.autoencoder)
    if sha256_file(file) != settings.autoencoder_sha256:
        raise UDPMError(f"autoencoder {file} changed since this run's config recorded its sha256")
    return load_model(file)[0]


# --- the spec ------------------------------------------------------------------------------


def build_process(config):
    from udpm.processes.gaussian import DiscreteGaussianProcess

    s = config.settings
    if s.schedule == "cosine":
        return DiscreteGaussianProcess.cosine(s.T)
    return getattr(DiscreteGaussianProcess, s.schedule)(s.T, s.beta_start, s.beta_end)


def build_generator(config, num_classes: int = 0) -> torch.nn.Module:
    from udpm.networks import UNet
    from udpm.networks.autoencoder import AutoencoderKL
    from udpm.networks.latent_diffusion import LatentDiffusion

    ae_args = {"image_channels": config.channels, **config.settings.autoencoder_network}
    autoencoder = AutoencoderKL(**ae_args)
    unet_args = dict(config.network)
    unet_args["image_channels"] = autoencoder.latent_channels
    unet_args["num_classes"] = num_classes if config.class_conditional else 0
    unet_args["out_factor"] = 1
    return LatentDiffusion(UNet(**unet_args), autoencoder)


def _sampler(options):
    from udpm.samplers.gaussian import sample_ddim, sample_ddpm

    sampler, eta = options["sampler"], options["eta"]
    kwargs = {"steps": options["steps"], "clip_x0": options["clip_x0"]}
    if sampler == "ddim":
        return sample_ddim, {**kwargs, "eta": 0.0 if eta is None else eta}
    if sampler != "ancestral":
        raise UDPMError(f"unknown sampler {sampler!r}; use ancestral or ddim")
    if eta is not None:
        raise UDPMError("--eta applies to the ddim sampler only")
    return sample_ddpm, kwargs


def sample(pipe, seeds, noises, labels, options, callback=None, return_levels=False):
    """A DDPM-family sampler on the scaled latent, then the decoder once per image."""
    if return_levels:
        raise UDPMError("ldm models have no per-level previews (UDPM has)")
    fn, kwargs = _sampler(options)
    seeds = list(seeds)
    z = fn(Denoiser(pipe.network, "eps"), pipe.process, pipe.network.latent_shape(pipe.image_shape),
           n=len(seeds), seed=seeds[0], noises=noises, class_labels=labels, callback=callback,
           **kwargs)  # fmt: skip
    return SampleResult(pipe.network.decode(z))


def latent_shapes(pipe, options: dict) -> list[tuple]:
    """``[z_T, ε_1, .., ε_{K-1}]`` at the latent's shape; DDIM with η = 0 consumes ``z_T`` only."""
    steps = options["steps"]
    if steps is None:
        steps = pipe.process.num_timesteps if options["sampler"] == "ancestral" else 50
    K = steps if isinstance(steps, int) else len(steps)
    deterministic = options["sampler"] == "ddim" and not options["eta"]
    return [pipe.network.latent_shape(pipe.image_shape)] * (1 if deterministic else K)


def validate(config) -> None:
    """Before a run directory is made: the autoencoder exists and fits the data."""
    from udpm.config.autoencoder import autoencoder_file

    s = config.settings
    if s.autoencoder is None:
        raise UDPMError("ldm trains on a stage-1 model: pass --autoencoder CKPT")
    _, meta = autoencoder_file(s.autoencoder)
    ae = meta["config"]
    if (ae["channels"], ae["resolution"]) != (config.channels, config.resolution):
        raise UDPMError(
            f"the autoencoder was trained on {ae['channels']}-channel {ae['resolution']} px "
            f"images; this run has {config.channels}-channel {config.resolution} px"
        )
    build_generator(config).latent_shape((config.channels, config.resolution, config.resolution))


def describe(config) -> str:
    s = config.settings
    net = s.autoencoder_network
    f = 2 ** (len(net.get("channel_mult", (1, 2, 4))) - 1)
    side = config.resolution // f
    sha = (s.autoencoder_sha256 or "none")[:12]
    return (
        f"latent {side}x{side}x{net.get('latent_channels', 4)} (f = {f}, autoencoder {sha}), "
        f"{s.schedule} β {s.beta_start}..{s.beta_end}, T = {s.T}, eps-prediction"
    )


SPEC = MethodSpec(
    name="ldm",
    settings=LDMSettings,
    trainer="udpm.methods.ldm:LDMMethod",
    build_process=build_process,
    build_generator=build_generator,
    sample=sample,
    latent_shapes=latent_shapes,
    sampler_options={"sampler": "ancestral", "steps": None, "eta": None, "clip_x0": False},
    preview_options={"sampler": "ddim", "steps": 50},
    describe=describe,
    validate=validate,
)
