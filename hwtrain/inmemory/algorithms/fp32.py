"""Digital fp32 SGD on the same network and script: the baseline the in-memory rules are compared to."""

from __future__ import annotations

import torch


class FP32Rule:
    """W -= lr * g^T x, exact, no periphery (the reference)."""

    def __init__(self, w_init: torch.Tensor) -> None:
        self.w = w_init.clone()
        self.w_scale = float(w_init.abs().max())

    def read(self, noisy: bool = True) -> torch.Tensor:
        return self.w

    def weights(self) -> torch.Tensor:
        return self.w

    def step(self, x: torch.Tensor, grad_out: torch.Tensor, lr: float) -> None:
        self.w -= lr * (grad_out.T @ x)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"w": self.w}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.w = state["w"].clone()
