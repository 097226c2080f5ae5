"""A 1-D text CNN (Kim 2014): embedding, parallel Conv1d of widths 3/4/5, max over time."""
import torch
from torch import nn
import torch.nn.functional as F


class TextCNN(nn.Module):
    def __init__(self, vocab=1000, dim=32, filters=16, classes=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, w) for w in (3, 4, 5))
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * filters, classes)

    def forward(self, ids):
        x = self.embed(ids).transpose(1, 2)
        pooled = [F.relu(conv(x)).amax(dim=2) for conv in self.convs]
        return self.fc(self.drop(torch.cat(pooled, dim=1)))


def factory():
    return TextCNN(), (torch.randint(0, 1000, (8, 40)),)
