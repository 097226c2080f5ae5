"""An LSTM classifier: embedding, 2-layer bidirectional LSTM, classify from the last step."""
import torch
from torch import nn


class LSTMClassifier(nn.Module):
    def __init__(self, vocab=500, dim=32, hidden=48, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))
        return self.fc(out[:, -1])


def factory():
    return LSTMClassifier(), (torch.randint(0, 500, (4, 12)),)
