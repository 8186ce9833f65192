"""Vanilla fully-connected GAN baseline (Goodfellow et al., 2014).

The paper's vanilla GAN code is not published; this is the common multilayer-perceptron version:

- generator: Linear ``nz -> hidden/4 -> hidden/2 -> hidden -> C*S*S`` with LeakyReLU(0.2) between layers and a
  tanh output, reshaped to an image;
- discriminator: Linear ``C*S*S -> hidden -> hidden/2 -> 1`` with LeakyReLU(0.2) and optional dropout (the
  original used maxout units and dropout; default 0 here so that the discriminator is deterministic).

PyTorch's default Linear initialisation is kept.
"""

from __future__ import annotations

from torch import Tensor, nn


class MLPGenerator(nn.Module):
    """``z (B, nz) -> x (B, img_channels, img_size, img_size)`` in [-1, 1] (tanh)."""

    def __init__(self, nz: int = 100, hidden: int = 1024, img_size: int = 64, img_channels: int = 1) -> None:
        super().__init__()
        self.img_shape = (img_channels, img_size, img_size)
        widths = [nz, hidden // 4, hidden // 2, hidden]
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Linear(hidden, img_channels * img_size * img_size), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """z: ``(B, nz)`` -> ``(B, C, S, S)`` in [-1, 1]."""
        return self.main(z).reshape(z.shape[0], *self.img_shape)


class MLPDiscriminator(nn.Module):
    """``x (B, C, S, S) in [-1, 1] -> (B,)`` real/fake logits (no sigmoid)."""

    def __init__(
        self, hidden: int = 1024, img_size: int = 64, img_channels: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(img_channels * img_size * img_size, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden // 2, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: ``(B, C, S, S)`` -> logits ``(B,)``."""
        return self.main(x.reshape(x.shape[0], -1)).reshape(x.shape[0])
