"""Small real TorchScript models, made in code for tests, examples and
benchmarks. Needs the ``torch`` extra."""

from __future__ import annotations

import io
import warnings

import numpy as np


def mlp_weights(in_features: int, hidden: int, out_features: int, seed: int = 0):
    """Seeded (w1, b1, w2, b2) of a two-layer perceptron (torch Linear layout)."""
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal((hidden, in_features)) / np.sqrt(in_features)).astype(np.float32),
            rng.standard_normal(hidden).astype(np.float32),
            (rng.standard_normal((out_features, hidden)) / np.sqrt(hidden)).astype(np.float32),
            rng.standard_normal(out_features).astype(np.float32))


def _save(module) -> bytes:
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript, deprecated in 2.13
        torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def mlp(in_features: int = 64, hidden: int = 128, out_features: int = 32, seed: int = 0) -> bytes:
    """OUTPUT__0 = linear(relu(linear(INPUT__0))), OUTPUT__1 = softmax of it."""
    import torch

    w1, b1, w2, b2 = (torch.from_numpy(w) for w in mlp_weights(in_features, hidden,
                                                                out_features, seed))

    class Mlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(in_features, hidden)
            self.fc2 = torch.nn.Linear(hidden, out_features)
            with torch.no_grad():
                self.fc1.weight.copy_(w1)
                self.fc1.bias.copy_(b1)
                self.fc2.weight.copy_(w2)
                self.fc2.bias.copy_(b2)

        def forward(self, x):
            y = self.fc2(torch.relu(self.fc1(x)))
            return y, torch.softmax(y, dim=1)

    return _save(Mlp().eval())


def add_sub(dims: int = 16) -> bytes:
    """(INPUT__0, INPUT__1) -> (OUTPUT__0 = a + b, OUTPUT__1 = a - b), any dtype."""
    import torch

    class AddSub(torch.nn.Module):
        def forward(self, a, b):
            return a + b, a - b

    return _save(AddSub())
