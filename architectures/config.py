"""Typed model configs: the parameters every model shares, validated on construction.

Each mixer adds its own fields by subclassing `ModelConfig` (see mixers/*.py). The
task's shapes (`seq_len`, `d_in`, `d_out`) are part of the config, so a config alone
rebuilds the model (`architectures.model_from_config`).
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

ACTIVATIONS = ("gelu", "relu", "silu", "tanh", "glu")
Activation = Literal["gelu", "relu", "silu", "tanh", "glu"]

# Fields filled from the task (or from `max_len`), never passed as model parameters.
SHAPE_FIELDS = ("name", "seq_len", "d_in", "d_out")


class ModelConfigError(ValueError):
    """A model parameter is invalid; the message names it and what is allowed."""


class ModelConfig(BaseModel):
    """Parameters shared by every model (backbone) plus the task's shapes.

    Backbone (architectures/backbone.py):
        x = read_in(u) (+ pos_emb[:L] if pos_emb)
        per block:  h = LN(x) if prenorm else x;  x = x + mixer(h) if residual else mixer(h)
                    then, if mlp, the same with an MLP (LN if mlp_norm, default = prenorm)
        x = LN(x) if final_norm;  y = read_out(x)
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    # what the model is and the shapes it maps (set by build_model from the task)
    name: str
    seq_len: int
    d_in: int
    d_out: int

    width: int = 64
    depth: int = 2
    heads: int = 2
    causal: bool = True
    prenorm: bool = True
    mlp: bool = True
    mlp_norm: bool | None = None  # LayerNorm before the MLP; None -> same as prenorm
    mlp_factor: int = 4
    activation: Activation = "gelu"
    residual: bool = True
    pos_emb: bool = True
    final_norm: bool = True
    max_len: int | None = None  # longest input accepted; None -> the task's seq_len
    init_std: float = 0.02  # std of the Gaussian init of inner linear maps (GPT-2 style)
    seed: int = 0  # initialisation seed (a torch.Generator is seeded with it)

    # whether the mixer splits `width` into `heads` (then heads must divide width)
    uses_heads: ClassVar[bool] = False
    # registered mixers draw their own parameters in reset_parameters(generator); an out-of-tree
    # one (architectures.plugin) keeps its constructor's init
    registered_mixer: ClassVar[bool] = True

    @model_validator(mode="after")
    def _check_common(self):
        for field in ("seq_len", "d_in", "d_out", "width", "depth", "heads", "mlp_factor"):
            value = getattr(self, field)
            if value < 1:
                raise ValueError(f"{field} must be a positive integer (>= 1), got {value}")
        if self.max_len is not None and self.max_len < self.seq_len:
            raise ValueError(
                f"max_len must be at least the task's seq_len ({self.seq_len}), got {self.max_len}"
            )
        if self.uses_heads and self.width % self.heads:
            divisors = [h for h in range(1, self.width + 1) if self.width % h == 0]
            raise ValueError(
                f"heads must divide width: width {self.width} is not divisible by heads {self.heads}; "
                f"choose heads in {divisors}"
            )
        if not self.init_std > 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std}")
        return self

    @property
    def l_max(self) -> int:
        """The longest sequence the model accepts (sizes its positional tables and filters)."""
        return self.seq_len if self.max_len is None else self.max_len

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def use_mlp_norm(self) -> bool:
        return self.prenorm if self.mlp_norm is None else self.mlp_norm

    @classmethod
    def parameter_names(cls) -> list[str]:
        """The names a user may pass to build_model for this model."""
        return [f for f in cls.model_fields if f not in SHAPE_FIELDS]


def config_error(name: str, cls: type[ModelConfig], err: ValidationError) -> ModelConfigError:
    """One readable line per bad field, plus the parameters this model accepts."""
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e.get("loc", ()))
        kind = e.get("type")
        if kind == "extra_forbidden":
            msg = "unknown parameter"
        elif kind == "value_error":  # our own validators: the message names the field
            msg = e.get("msg", "invalid").removeprefix("Value error, ")
        else:
            msg = f"{e.get('msg', 'invalid')}, got {e.get('input')!r}"
        parts.append(f"{field}: {msg}" if field else msg)
    allowed = ", ".join(cls.parameter_names())
    return ModelConfigError(f"model {name!r}: " + "; ".join(parts) + f" (parameters: {allowed})")
