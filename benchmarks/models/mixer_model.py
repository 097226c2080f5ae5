"""Held out: an MLP-Mixer (Tolstikhin et al. 2021): 8x8 patches, token- and channel-mixing MLPs."""
import torch
from torch import nn


class MixerBlock(nn.Module):
    def __init__(self, tokens, dim, token_hidden, channel_hidden):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.tokens = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(),
                                    nn.Linear(token_hidden, tokens))
        self.channels = nn.Sequential(nn.Linear(dim, channel_hidden), nn.GELU(),
                                      nn.Linear(channel_hidden, dim))

    def forward(self, x):
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channels(self.norm2(x))


class Mixer(nn.Module):
    def __init__(self, patch=8, dim=96, depth=2, classes=10):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(3 * patch * patch, dim)
        self.blocks = nn.Sequential(*(MixerBlock(16, dim, 48, 192) for _ in range(depth)))
        self.head = nn.Linear(dim, classes)

    def forward(self, images):
        b, c, h, w = images.shape
        p = self.patch
        patches = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        x = self.blocks(self.embed(patches.reshape(b, (h // p) * (w // p), c * p * p)))
        return self.head(x.mean(dim=1))


def factory():
    torch.manual_seed(0)
    return Mixer(), (torch.randn(12, 3, 32, 32),)
