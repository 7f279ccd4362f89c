"""The shared backbone: read-in, a stack of blocks around a sequence mixer, read-out.

    u (B, L, d_in)
    x = read_in(u) + pos_emb[:L]                  (pos_emb if config.pos_emb)
    for block in blocks:                           (config.depth blocks)
        h = mixer_norm(x)                          (LayerNorm if prenorm, else identity)
        x = x + mixer(h)                           (just mixer(h) if not residual)
        h = mlp_norm(x); x = x + mlp(h)            (if config.mlp)
    x = final_norm(x)                              (LayerNorm if final_norm)
    y = read_out(x)  (B, L, d_out)

This is the model of Liu et al. (the nanoGPT-style GPT-2 backbone of their code), with
the mixer swapped by name. Initialisation follows it too: inner linear maps N(0, init_std),
zero biases, the MLP's output map N(0, init_std / sqrt(2 depth)), read-in and read-out the
PyTorch default U(+-1/sqrt(fan_in)). Every draw comes from one torch.Generator seeded with
`config.seed`, so two builds of one config are bit-identical.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from .config import ModelConfig, ModelConfigError
from .initialization import fill_normal, fill_uniform


class GLU(nn.Module):
    """The paper's gated activation: sigmoid(W1 x) * W2 x (square maps, no bias)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        return torch.sigmoid(self.gate(x)) * self.value(x)


def make_activation(name: str, dim: int) -> nn.Module:
    if name == "glu":
        return GLU(dim)
    return {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}[name]()


class MLP(nn.Module):
    """Position-wise MLP: fc_out(act(fc_in(x))), hidden width mlp_factor * width."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.mlp_factor * config.width
        self.fc_in = nn.Linear(config.width, hidden)
        self.act = make_activation(config.activation, hidden)
        self.fc_out = nn.Linear(hidden, config.width)

    def forward(self, x):
        return self.fc_out(self.act(self.fc_in(x)))


def norm_or_identity(on: bool, width: int) -> nn.Module:
    return nn.LayerNorm(width) if on else nn.Identity()


class Block(nn.Module):
    def __init__(self, config: ModelConfig, mixer_cls: Callable[[ModelConfig], nn.Module]):
        super().__init__()
        self.residual = config.residual
        self.mixer_norm = norm_or_identity(config.prenorm, config.width)
        self.mixer = mixer_cls(config)
        self.mlp_norm = norm_or_identity(config.use_mlp_norm, config.width) if config.mlp else None
        self.mlp = MLP(config) if config.mlp else None

    def forward(self, x):
        h = self.mixer(self.mixer_norm(x))
        x = x + h if self.residual else h
        if self.mlp is not None:
            h = self.mlp(self.mlp_norm(x))
            x = x + h if self.residual else h
        return x


class SequenceModel(nn.Module):
    """(B, L, d_in) -> (B, L, d_out) for any L <= config.l_max."""

    def __init__(self, config: ModelConfig, mixer_cls: Callable[[ModelConfig], nn.Module]):
        super().__init__()
        self.config = config
        # Build under a forked global RNG: the default PyTorch inits of nn.Linear etc. must
        # not consume (and so perturb) anybody's global random state; reset_parameters
        # below overwrites every parameter of the registered mixers from an explicit generator.
        # The fork is seeded so that an out-of-tree mixer's own init is fixed by the seed too.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(config.seed)  # CPU only: CUDA's RNG is not forked
            self.read_in = nn.Linear(config.d_in, config.width)
            self.pos_emb = nn.Parameter(torch.zeros(config.l_max, config.width)) if config.pos_emb else None
            self.blocks = nn.ModuleList(Block(config, mixer_cls) for _ in range(config.depth))
            self.final_norm = norm_or_identity(config.final_norm, config.width)
            self.read_out = nn.Linear(config.width, config.d_out)
        generator = torch.Generator().manual_seed(config.seed)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw every parameter from `generator` (a fixed order, so a seed fixes the weights)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                fill_normal(module.weight, std, generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        for linear in (self.read_in, self.read_out):
            bound = 1.0 / math.sqrt(linear.in_features)
            fill_uniform(linear.weight, bound, generator)
            fill_uniform(linear.bias, bound, generator)
        if self.pos_emb is not None:
            fill_normal(self.pos_emb, std, generator)
        for block in self.blocks:
            if block.mlp is not None:
                fill_normal(block.mlp.fc_out.weight, std / math.sqrt(2 * self.config.depth), generator)
            # mixer-specific parameters (conv filters, SSM parameters, ...) and overrides
            if self.config.registered_mixer and hasattr(block.mixer, "reset_parameters"):
                block.mixer.reset_parameters(generator)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 3 or u.shape[-1] != self.config.d_in:
            raise ModelConfigError(
                f"{self.config.name}: expected input of shape (batch, length, {self.config.d_in}), "
                f"got {tuple(u.shape)}"
            )
        length = u.shape[1]
        if length > self.config.l_max:
            raise ModelConfigError(
                f"{self.config.name}: input has {length} positions but the model was built for at most "
                f"{self.config.l_max} (the task's seq_len); build it with max_len={length} or more"
            )
        x = self.read_in(u)
        if self.pos_emb is not None:
            x = x + self.pos_emb[:length]
        for block in self.blocks:
            x = block(x)
        return self.read_out(self.final_norm(x))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
