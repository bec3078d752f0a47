"""Named starting points: the papers' settings per data set, and small CPU versions.

A preset is a dict of config values; ``settings`` holds the method's own ones (over its
paper defaults in ``udpm.config.settings``). Where a preset departs from its paper it says
so here and in the README's preset table.
"""

from __future__ import annotations

from udpm.config.schema import Config
from udpm.config.settings import SETTINGS, UDPM_OPTIM, Optim
from udpm.config.typed import build_dataclass
from udpm.errors import UDPMError
from udpm.networks.autoencoder import AE_PRESETS

# UDPM paper (NeurIPS 2024), Tables 3-5; the text does not give the generator's dropout, so
# the network presets use EDM's values. Optimiser as the authors' code (UDPM_OPTIM).
_PAPER_UDPM = dict(
    ema_decay=0.9999,
    batch_size=64,
    steps=600_000,
    settings=dict(
        lambda_l1=(1.0, 1.0, 0.0),
        lambda_perceptual=(4.0, 4.0, 0.0),
        lambda_adv=(0.2, 0.5, 1.0),
        d_eval_in_g_step=True,  # the authors' code: D.eval() around G's step
        optim=UDPM_OPTIM,
    ),
)

# The small CPU presets share one network size and data set so that they compare methods.
_CPU = dict(
    data="emoji32",
    resolution=32,
    batch_size=32,
    steps=6000,
    ema_decay=0.999,
    network_preset="emoji32-cpu",
    discriminator_preset="emoji32-cpu",
    log_every=25,
    checkpoint_every=250,
)

PRESETS: dict[str, dict] = {
    "cifar10": dict(
        _PAPER_UDPM,
        data="cifar-10-python.tar.gz",
        resolution=32,
        class_conditional=True,
        settings=dict(_PAPER_UDPM["settings"], r1=(0.025, 0.1, 0.4)),
        network_preset="cifar10",
        discriminator_preset="cifar10",
        discriminator_overrides={"dropout": 0.4},
    ),
    "ffhq64": dict(
        _PAPER_UDPM,
        data="ffhq64.zip",
        resolution=64,
        settings=dict(_PAPER_UDPM["settings"], r1=(0.1, 0.4, 0.8)),
        network_preset="ffhq64",
        discriminator_preset="ffhq64",
        discriminator_overrides={"dropout": 0.2},
    ),
    "afhqv2-64": dict(
        _PAPER_UDPM,
        data="afhqv2-64.zip",
        resolution=64,
        settings=dict(_PAPER_UDPM["settings"], r1=(0.1, 0.4, 0.8)),
        network_preset="afhqv2-64",
        discriminator_preset="afhqv2-64",
        discriminator_overrides={"dropout": 0.3},
    ),
    # Small enough for 2 CPU cores; the recipe the shipped model was trained with. It departs
    # from the authors on purpose (README, "Presets"): Adam (0.5, 0.9) and gradient clipping
    # for stability at lr 2e-4 with a short warm-up, no LPIPS (no VGG weights offline), D's
    # two GAN terms summed, instance noise decaying every 200 steps. The authors' D loss
    # and noise annealed over the run did worse at 13k steps (benchmarks/ABLATION.md).
    "emoji32-cpu": dict(
        _CPU,
        steps=13000,
        sample_every=250,
        settings=dict(
            r1=(0.025, 0.1, 0.4),
            perceptual="none",
            lambda_perceptual=(0.0, 0.0, 0.0),
            d_loss="sum",
            instance_noise_every=200,
            optim=Optim(lr=2e-4, betas=(0.5, 0.9), warmup=200, grad_clip=1.0),
        ),
    ),
    # Baselines at the same network size and budget as emoji32-cpu, each with its own
    # paper's optimiser (Adam's default betas); the learning rate and warm-up are scaled
    # to the CPU budget as for emoji32-cpu.
    "emoji32-cpu-ddpm": dict(
        _CPU,
        method="ddpm",
        sample_every=500,
        settings=dict(optim=Optim(lr=2e-4, betas=(0.9, 0.999), warmup=200, grad_clip=1.0)),
    ),
    "emoji32-cpu-simple": dict(
        _CPU,
        method="simple",
        sample_every=500,
        settings=dict(
            multiscale_base=16,
            optim=Optim(lr=2e-4, betas=(0.9, 0.999), warmup=200, grad_clip=1.0),
        ),
    ),
    # DDGAN at the CPU presets' network size, with the paper's own recipe (T = 4, nz 100,
    # R1 0.02 every 15 steps, Adam (0.5, 0.9) with lr_G 1.6e-4 / lr_D 1.25e-4, cosine decay,
    # no clipping). D is the CPU presets' D on pairs, without dropout, as NVlabs' D.
    "emoji32-cpu-ddgan": dict(
        _CPU,
        method="ddgan",
        sample_every=500,
        discriminator_overrides={"dropout": 0.0},
    ),
    # DDGAN's CIFAR-10 settings (Xiao et al. 2022; NVlabs' README command): T = 4, nz 100
    # mapped by 4 layers, NCSN++ width 128, mult (1,2,2,2), 2 blocks, attention at 16, no
    # dropout, positional time embedding; batch 4 x 64 = 256 for 1800 epochs (351k steps),
    # EMA 0.9999; D: NVlabs' small D (width 64, mult (2,4,8,8) on 32 px). Our U-Net conditions
    # by scale-and-shift on one embedding where NCSN++ has AdaGN per norm: 44.5M, not 48.4M.
    "cifar10-ddgan": dict(
        method="ddgan",
        data="cifar-10-python.tar.gz",
        resolution=32,
        batch_size=256,
        steps=351_600,
        ema_decay=0.9999,
        network_preset="cifar10",
        discriminator_preset="cifar10",
        network_overrides={
            "model_channels": 128,
            "channel_mult": (1, 2, 2, 2),
            "num_blocks": 2,
            "attn_resolutions": (16,),
            "dropout": 0.0,
            "resolution": 32,
            "num_classes": 0,
            "embedding": "positional",
            "embedding_channels": 512,
            "z_layers": 4,
        },
        discriminator_overrides={
            "model_channels": 64,
            "channel_mult": (2, 4, 8, 8),
            "num_classes": 0,
            "dropout": 0.0,
        },
    ),
    # DDPM's CIFAR-10 settings (Ho et al. 2020, Appendix B): 35.7M-parameter U-Net, ch 128,
    # mult (1,2,2,2), 2 blocks, attention at 16x16, dropout 0.1, lr 2e-4, batch 128,
    # 800k steps, EMA 0.9999, T = 1000, linear betas, Adam defaults, grad clip 1.
    "cifar10-ddpm": dict(
        method="ddpm",
        data="cifar-10-python.tar.gz",
        resolution=32,
        batch_size=128,
        steps=800_000,
        ema_decay=0.9999,
        network_preset="cifar10",
        discriminator_preset="cifar10",
        network_overrides={
            "model_channels": 128,
            "channel_mult": (1, 2, 2, 2),
            "num_blocks": 2,
            "attn_resolutions": (16,),
            "dropout": 0.1,
            "resolution": 32,
            "embedding": "positional",
        },
    ),
    # VDM's CIFAR-10 settings (Kingma et al. 2021, Appendix B; their configs/cifar10.py): 32
    # ResNet blocks per side at full resolution (no downsampling), 128 channels, no attention
    # in the blocks (the U-Net's middle keeps its one attention block, as VDM's ScoreUNet),
    # dropout 0.1, AdamW (0.9, 0.99, weight decay 0.01), lr 2e-4, batch 128, EMA 0.9999 over
    # every parameter (γ included: it lives in the generator). The paper trains for 10M steps.
    "cifar10-vdm": dict(
        method="vdm",
        data="cifar-10-python.tar.gz",
        resolution=32,
        batch_size=128,
        steps=10_000_000,
        ema_decay=0.9999,
        network_preset="cifar10",
        discriminator_preset="cifar10",
        network_overrides={
            "model_channels": 128,
            "channel_mult": (1,),
            "num_blocks": 32,
            "attn_resolutions": (),
            "dropout": 0.1,
            "resolution": 32,
            "num_classes": 0,
        },
    ),
    # The emoji32-cpu U-Net and budget, VDM's own optimiser; trained on emoji32 without its
    # held-out 10% (udpm.eval.heldout) so that bpd is measured on unseen images. The lr is
    # VDM's 2e-4 with a 200-step warm-up, as the other CPU baselines.
    "emoji32-cpu-vdm": dict(
        _CPU,
        method="vdm",
        sample_every=500,
        settings=dict(
            sample_steps=100,
            optim=Optim(lr=2e-4, betas=(0.9, 0.99), weight_decay=0.01, warmup=200),
        ),
    ),
}

# Latent diffusion, two stages (Rombach et al. 2022). CPU: an f = 4 autoencoder (8x8x4
# latent) without LPIPS (no VGG weights offline) or discriminator, Adam (0.5, 0.9) at a
# learning rate raised for a few hundred steps; then the emoji32-cpu U-Net on its latent
# ("resolution" 8 places attention at 4x4, as emoji32-cpu's does in pixel space).
_AE_CPU = dict(AE_PRESETS["emoji32-cpu-ae"])
PRESETS["emoji32-cpu-ae"] = dict(
    _CPU,
    method="autoencoder",
    network=_AE_CPU,
    discriminator=dict(model_channels=32, num_layers=2),
    sample_every=250,
    settings=dict(
        perceptual="none", disc_weight=0.0, optim=Optim(lr=1e-3, betas=(0.5, 0.9), warmup=50)
    ),
)
PRESETS["emoji32-cpu-ldm"] = dict(
    _CPU,
    method="ldm",
    network_overrides={"resolution": 8},
    sample_every=500,
    settings=dict(
        autoencoder_network=_AE_CPU,
        optim=Optim(lr=2e-4, betas=(0.9, 0.999), weight_decay=0.01, warmup=200, grad_clip=1.0),
    ),
)
# LDM-4 style for the 64 px data sets, for GPUs: CompVis' kl-f4 autoencoder (z = 3, 16x16x3
# latent at 64 px) with LPIPS and the patch discriminator from step 50001; then a U-Net of the
# ffhq64 family on the latent (width 128, mult (1, 2, 2): 16, 8, 4; attention at 8 and 4).
PRESETS["ffhq64-ae"] = dict(
    method="autoencoder",
    data="ffhq64.zip",
    resolution=64,
    batch_size=64,
    steps=200_000,
    ema_decay=0.9999,
    network=dict(AE_PRESETS["kl-f4"]),
    discriminator=dict(model_channels=64, num_layers=3),
)
PRESETS["ffhq64-ldm"] = dict(
    method="ldm",
    data="ffhq64.zip",
    resolution=64,
    batch_size=64,
    steps=400_000,
    ema_decay=0.9999,
    network_preset="ffhq64",
    network_overrides={"channel_mult": (1, 2, 2), "attn_resolutions": (8, 4), "resolution": 16},
    discriminator_preset="ffhq64",
    settings=dict(autoencoder_network=dict(AE_PRESETS["kl-f4"])),
)


def preset_config(name: str) -> Config:
    """The resolved :class:`Config` of a preset (network dicts and settings filled in)."""
    from udpm.networks import DISC_PRESETS, UNET_PRESETS

    if name not in PRESETS:
        raise UDPMError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    values = dict(PRESETS[name])
    network = _network(values, "network", UNET_PRESETS)
    disc = _network(values, "discriminator", DISC_PRESETS)
    method = values.get("method", "udpm")
    settings = build_dataclass(SETTINGS[method], values.pop("settings", {}), "settings")
    return Config(**values, network=network, discriminator=disc, settings=settings)


def _network(values: dict, key: str, presets: dict) -> dict:
    """``values[key]`` itself (an autoencoder's), or ``key_preset`` updated by ``key_overrides``."""
    name = values.pop(f"{key}_preset", None)
    if key in values:
        return dict(values.pop(key))
    network = dict(presets[name])
    network.update(values.pop(f"{key}_overrides", {}))
    return network
