"""Held out: a GRU sequence classifier (the calibration has LSTM micro-models, not GRU)."""
import torch
from torch import nn


class GRUClassifier(nn.Module):
    def __init__(self, vocab=800, dim=64, hidden=96, classes=6):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, ids):
        out, _ = self.gru(self.embed(ids))
        return self.fc(out[:, -1])


def factory():
    torch.manual_seed(0)
    return GRUClassifier(), (torch.randint(0, 800, (8, 20)),)
