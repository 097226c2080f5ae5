"""An MLP classifier: factory() -> (module, example inputs)."""
import torch
from torch import nn


def factory():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(256, 128), nn.GELU(), nn.Linear(128, 10))
    return model, (torch.randn(32, 1, 28, 28),)
