"""A CNN with BatchNorm and pooling."""
import torch
from torch import nn


def factory():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AvgPool2d(2), nn.Conv2d(32, 32, 3, stride=2, padding=2, dilation=2, groups=4),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    return model, (torch.randn(8, 3, 32, 32),)
