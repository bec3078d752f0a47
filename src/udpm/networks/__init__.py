"""Neural networks (``nn.Module``s only): the U-Net f_θ and the discriminator."""

from udpm.networks.discriminator import DISC_PRESETS, Discriminator
from udpm.networks.layers import count_parameters
from udpm.networks.unet import UNET_PRESETS, UNet

__all__ = ["DISC_PRESETS", "UNET_PRESETS", "Discriminator", "UNet", "count_parameters"]
