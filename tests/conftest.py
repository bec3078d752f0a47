import pytest
import torch

# Tiny convolutions run far faster on one thread, and CI machines may be shared.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


class ShuffleNet(torch.nn.Module):
    """A tiny stand-in for f_θ: conv to γ²C channels, pixel shuffle, depends on t."""

    def __init__(self, channels=3, factor=2):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels * factor**2, 3, padding=1)
        self.factor = factor
        self.seen_shapes = []

    def forward(self, x, t, class_labels=None):
        self.seen_shapes.append(tuple(x.shape[-2:]))
        y = self.conv(x) + t.view(-1, 1, 1, 1)
        return torch.nn.functional.pixel_shuffle(torch.tanh(y), self.factor)


@pytest.fixture
def shuffle_net():
    return ShuffleNet()
