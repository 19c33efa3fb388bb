"""Tiny models that ``test_loaders`` names as ``loader_models:<attr>`` (importable, not collected)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression

FEATURES = 4
CLASSES = 3
_RNG = np.random.default_rng(0)
X = _RNG.standard_normal((60, FEATURES)).astype(np.float32)
Y = np.digitize(X[:, 0], [-0.4, 0.4])  # three balanced-ish classes 0, 1, 2


class Classifier(torch.nn.Module):
    """A linear layer and a softmax: float32 [batch, 4] → probabilities [batch, 3]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(FEATURES, CLASSES)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(features), dim=1)


class TokenPooler(torch.nn.Module):
    """Token ids and a mask → a mean-pooled embedding: a stand-in for a text model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(100, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        return (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class FixedBatch(torch.nn.Module):
    """Hard-codes a batch size of 2 in a reshape: its graph cannot take another batch size."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.reshape(2, -1) * 2.0


class Broken(torch.nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this forward always fails")


classifier = Classifier()
classifier.example_inputs = (torch.from_numpy(X[:2]),)

no_examples = Classifier()

fixed_batch = FixedBatch()
fixed_batch.example_inputs = (torch.from_numpy(X[:2]),)

broken = Broken()
broken.example_inputs = (torch.from_numpy(X[:2]),)


def make_pooler() -> TokenPooler:
    """A factory: ``load_model`` calls it with no arguments."""
    pooler = TokenPooler()
    ids = torch.arange(10, dtype=torch.long).reshape(2, 5)
    pooler.example_inputs = (ids, torch.ones(2, 5, dtype=torch.long))
    return pooler


def failing_factory() -> TokenPooler:
    raise ValueError("factory exploded")


logistic = LogisticRegression().fit(X, Y)
logistic_named = LogisticRegression().fit(X, np.array(["low", "mid", "high"])[Y])
regression = LinearRegression().fit(X, X @ np.arange(1.0, FEATURES + 1.0))
unfitted = LogisticRegression()
not_a_model = {"weights": [1, 2, 3]}
