"""Held out: a temporal convolutional network (Bai et al. 2018 style): dilated Conv1d residual
blocks over a multichannel series, mean over time, a linear classifier."""
import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, channels, dilation):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.conv2(self.relu(self.conv1(x))))


class TCN(nn.Module):
    def __init__(self, inputs=12, channels=40, classes=7):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(inputs, channels, 5, padding=2), nn.ReLU())
        self.blocks = nn.Sequential(Residual(channels, 1), Residual(channels, 2),
                                    Residual(channels, 4))
        self.head = nn.Linear(channels, classes)

    def forward(self, series):
        return self.head(self.blocks(self.stem(series)).mean(dim=2))


def factory():
    torch.manual_seed(0)
    return TCN(), (torch.randn(16, 12, 100),)
