"""peft's LoRA linear with its adapter added inside the output's GEMM (its own module: it imports
peft, which the CLI's start does not need)."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora import Linear as PeftLoraLinear
from torch import nn


class AddmmLoraLinear(PeftLoraLinear):
    """peft's LoRA linear, whose adapter is added inside one GEMM: ``addmm(W x, A x, B^T, alpha=scale)``.

    peft computes ``W x + B(A(x)) * scale`` as four passes over the layer's whole output (B's
    product, the scaling, the sum, and a cast of ``x`` to the adapter's dtype), each of which
    writes an activation; on a CPU those passes are bound by memory, and a LoRA took longer
    than the frozen matmul it adapts. ``addmm`` adds the product into the output as it is
    written (and autograd's backward does the same for the input's gradient). Same weights,
    names and state dict as peft's; anything this does not cover (dropout, a merged or
    disabled adapter, a LoRA variant or bias, mixed batches) runs peft's own forward."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        active = [a for a in self.active_adapters if a in self.lora_A]
        if (self.disable_adapters or self.merged or args or kwargs or any(a in self.lora_variant for a in active)
                or not all(isinstance(self.lora_dropout[a], nn.Identity) and self.lora_B[a].bias is None for a in active)):
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)
        if not active:
            return result
        autocast = torch.is_autocast_enabled(x.device.type)
        if not autocast and any(self.lora_A[a].weight.dtype != result.dtype or x.dtype != result.dtype for a in active):
            return super().forward(x, *args, **kwargs)  # mixed dtypes outside autocast: peft casts
        flat = result.reshape(-1, result.shape[-1])
        for a in active:
            low = nn.functional.linear(x, self.lora_A[a].weight).reshape(-1, self.r[a])
            flat = torch.addmm(flat, low, self.lora_B[a].weight.t(), alpha=self.scaling[a])
        return flat.view(result.shape)
