"""Neural networks (``nn.Module``s only): the U-Net f_θ and the discriminator."""

from udpm.networks.layers import count_parameters
from udpm.networks.unet import UNET_PRESETS, UNet

__all__ = ["UNET_PRESETS", "UNet", "count_parameters"]
