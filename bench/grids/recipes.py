"""The models and solver settings the grids share: the exactly-expressive bare models, the paper's own
models, the matrix-free Levenberg-Marquardt of grids 8 and 9, and the adaptive LR schedule."""
from __future__ import annotations

GD_DEPTH = 3  # Liu et al.: three layers per GD step

# the training problems of grid 8's GD steps: gd_step scores one position (5 residuals) per problem, and
# the model has ~44k weights, so fewer problems are fitted without the step being learned
GD_STEP_PROBLEMS = 16384


def exact_multiply_model() -> dict:
    """The backbone reduced to one mixer (no norms, no MLP, no position embedding): BaseConv
    computes multiply exactly with it (the gate multiplies two projections of the same token,
    the conv filter starts at the identity), softmax attention cannot."""
    return {"prenorm": False, "final_norm": False, "mlp": False, "pos_emb": False}


def exact_gd_step_model(D: int = 5) -> dict:
    """The architecture of the linear-attention GD-step construction (architectures.constructions.
    linear_attention_gd_step) at D unknowns: width 3D + 2 rounded up to even (18 at D = 5), 2 heads,
    depth 2, learned position embedding, no norms, no MLP. Some setting of its weights (3,335 at
    D = 5, N = 20) computes the gd_step target exactly."""
    width = 3 * D + 2
    return {"width": width + width % 2, "heads": 2, "depth": 2, "prenorm": False, "final_norm": False, "mlp": False,
            "pos_emb": True}


def paper_primitive_model(depth: int, layernorm: bool = False) -> dict:
    """The paper's primitive model: width 64, 2 heads, MLP x4 (ReLU); LayerNorm off (the
    grid's base) or on (pre-norm and a final norm, the backbone's default)."""
    return {"width": 64, "heads": 2, "depth": depth, "mlp": True, "mlp_factor": 4, "activation": "relu",
            "prenorm": layernorm, "final_norm": layernorm}


def paper_gd_step_model(model: str, budget: str = "ci") -> dict:
    """The paper's learned-GD-step models: 3 layers, no MLP, no LayerNorm. BaseConv at width 64
    (43,589 weights); linear attention non-causal at the paper's width 256 with 16 heads on the
    `paper` budget (786k weights) and at width 64 with 4 heads on `ci` (52,037 weights: the
    paper's size costs 18x more per Gauss-Newton product, too much for a 15-minute CPU run)."""
    bare = {"depth": GD_DEPTH, "mlp": False, "prenorm": False, "final_norm": False}
    if model == "baseconv":
        return {**bare, "width": 64}
    width, heads = (256, 16) if budget == "paper" else (64, 4)
    return {**bare, "width": width, "heads": heads, "causal": False}


def matrix_free_lm(train_size: int = 512, **overrides) -> dict:
    """The matrix-free Levenberg-Marquardt settings grid 8 trains with (results/lm_choices/ says what each
    gave): Gauss-Newton products on half of a 512-problem training set, taken by torch.func.linearize,
    Kronecker-factored preconditioner, CG capped at 100 products a solve, mu / 3 when rho > 0.5 and x 2
    when rho < 0.25 (the solver's ratio rule, with its backtracks before a re-solve)."""
    return {"name": "levenberg_marquardt", "solver": "cg", "train_size": train_size,
            "curvature_size": max(1, train_size // 2), "cg_max_iter": 100, "preconditioner": "kronecker",
            "products": "linearize", "damping_down": 1 / 3, "damping_up": 2.0, **overrides}


def lm_512_then_2048(**polish) -> dict:
    """The time-to-precision recipe for the paper's primitive BaseConv (bench/benchmarks/test_bench_training.py):
    the matrix-free LM on 512 problems for the first 40 steps, then on 2,048 fresh ones, its curvature on
    256 of them a step; `polish` changes the second phase's LM."""
    return {"optimizer": matrix_free_lm(), "polish_after": 40, "polish_patience": 1000,
            "polish": matrix_free_lm(train_size=2048, curvature_size=256, **polish)}


def adaptive_schedule(steps: int, lr: float) -> dict:
    """The adaptive LR with its clock scaled to the run (the paper's numbers at 1M steps),
    capped at the initial LR: small-batch gradients rarely agree (cosine < threshold), and an
    uncapped rule then raises the LR every period until training blows up."""
    every = max(1, steps // 100)
    return {"name": "adaptive", "gamma": 0.9, "every": every, "measure_every": every,
            "probe_batches": 64 if steps >= 100_000 else 8, "warmup": steps // 10, "max_lr": lr}
