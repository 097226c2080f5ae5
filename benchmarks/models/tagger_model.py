"""Held out: an LSTM sequence tagger (one unidirectional layer, a tag per token: logits
(N, T, C), cross-entropy over every step)."""
import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self, vocab=1200, dim=48, hidden=80, tags=12):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.tag = nn.Linear(hidden, tags)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))
        return self.tag(out)


def factory():
    torch.manual_seed(0)
    return Tagger(), (torch.randint(0, 1200, (6, 24)),)
