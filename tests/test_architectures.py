"""Model-level tests: shapes, causality, parameter counts, determinism, errors, gradients."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import architectures as A
from architectures import ModelConfigError, build_model
from primitives import TASKS, make_task

torch.set_num_threads(1)

F64 = torch.float64
SMALL = SimpleNamespace(seq_len=6, d_in=4, d_out=3)  # any object with the three shapes is a task
TINY = dict(width=8, depth=2, heads=2)

# every model, and the variants of each that change its parameters or its computation
VARIANTS = [
    ("attention", {}),
    ("linear_attention", {}),
    ("baseconv", {"conv_kind": "short"}),
    ("baseconv", {"conv_kind": "long"}),
    ("baseconv", {"conv_kind": "implicit"}),
    ("baseconv", {"conv_bias": True, "branch_mix": True}),
    ("hyena", {}),
    ("hyena", {"order": 3}),
    ("s4d", {"state_dim": 8}),
    ("mamba", {"state_dim": 4}),
    ("based", {"feature_dim": 3}),
    ("mlp", {}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in VARIANTS]


def x64(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_every_model_is_registered():
    assert set(A.MODELS) == {"attention", "linear_attention", "baseconv", "hyena", "s4d", "based", "mlp", "mamba"}
    task = make_task("multiply")
    assert A.MODELS["baseconv"](task, width=16).config.width == 16


# ---- shapes ------------------------------------------------------------------------------

TASK_NAMES = [n for n in ("multiply", "read", "identity") if n in TASKS]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_shapes_on_tasks(name, params, causal):
    for task_name in TASK_NAMES:
        task = make_task(task_name, **({"length": 7} if task_name != "read" else {}))
        model = build_model(name, task, width=8, causal=causal, **params)
        u = torch.randn(2, task.seq_len, task.d_in)
        y = model(u)
        assert y.shape == (2, task.seq_len, task.d_out) and y.dtype == torch.float32
        assert torch.isfinite(y).all()
        # float64 too, and a length-1 sequence
        y64 = model.to(F64)(u.to(F64)[:, :1])
        assert y64.shape == (2, 1, task.d_out) and y64.dtype == F64


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_paper_size_models_run(name, params):
    model = build_model(name, make_task("multiply"), **params)  # width 64, depth 2, MLP x4
    assert model(torch.randn(2, 40, 20)).shape == (2, 40, 10)
    assert model.config.model_dump()["name"] == name


# ---- causality ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_causal_models_ignore_the_future(name, params):
    model = build_model(name, SMALL, **TINY, **params).to(F64)
    u = x64((3, 6, 4))
    for t in (0, 2, 5):
        v = u.clone()
        v[:, t] += x64((3, 4), seed=t + 1)
        y, yv = model(u), model(v)
        assert (y[:, :t] - yv[:, :t]).abs().max().item() <= 1e-12 if t else True
        assert (y[:, t] - yv[:, t]).abs().max() > 1e-6  # the perturbed position does change


BACKBONE_OPTIONS = [
    {"prenorm": False, "final_norm": False},
    {"residual": False, "mlp": False},
    {"pos_emb": False, "activation": "glu"},
]


@pytest.mark.parametrize("options", BACKBONE_OPTIONS)
@pytest.mark.parametrize("name", sorted(A.MODELS))
def test_causality_under_backbone_options(name, options):
    model = build_model(name, SMALL, **TINY, **options).to(F64)
    u = x64((2, 6, 4))
    v = u.clone()
    v[:, 3:] = x64((2, 3, 4), seed=9)
    assert (model(u)[:, :3] - model(v)[:, :3]).abs().max().item() <= 1e-12


@pytest.mark.parametrize("name", sorted(set(A.MODELS) - {"mlp"}))
def test_non_causal_models_see_the_future(name):
    model = build_model(name, SMALL, **TINY, causal=False).to(F64)
    u = x64((2, 6, 4))
    v = u.clone()
    v[:, 5] += 1.0
    assert (model(u)[:, 0] - model(v)[:, 0]).abs().max() > 1e-8


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_prefix_of_input_gives_prefix_of_output(name, params):
    """A causal model run on the first L' tokens returns the first L' outputs of the full run."""
    model = build_model(name, SMALL, **TINY, **params).to(F64)
    u = x64((2, 6, 4))
    assert (model(u[:, :4]) - model(u)[:, :4]).abs().max().item() <= 1e-12


def test_mlp_control_is_tokenwise():
    model = build_model("mlp", SMALL, **TINY).to(F64)
    u = x64((2, 6, 4))
    v = u.clone()
    v[:, 2] += 1.0
    diff = (model(u) - model(v)).abs().amax(dim=(0, 2))
    assert diff[2] > 1e-6 and torch.all(diff[torch.arange(6) != 2] == 0)


# ---- parameter counts --------------------------------------------------------------------


def expected_count(name, w=8, depth=2, d_in=4, d_out=3, L=6, factor=4, causal=True, **p):
    """Parameter count by formula: backbone + depth * (norms + mixer + MLP)."""
    lin = lambda i, o: i * o + o  # noqa: E731  nn.Linear with bias
    mlp = lin(w, factor * w) + lin(factor * w, w)
    if name in ("attention", "linear_attention"):
        mixer = 4 * lin(w, w)
    elif name == "baseconv":
        mixer = 3 * lin(w, w)
        if p.get("conv_kind", "short") == "implicit":
            e, hid = 3, 16
            mixer += lin(e, hid) + lin(hid, w if causal else 2 * w)
        else:
            mixer += w * L + (0 if causal else w * (L - 1)) + (w if p.get("conv_bias") else 0)
        mixer += 2 * w if p.get("branch_mix") else 0
    elif name == "hyena":
        n, taps, e, hid = p.get("order", 2), 3, 5, 32
        long_channels = (n - 1) * w * (1 if causal else 2)
        mixer = lin(w, (n + 1) * w) + (n + 1) * w * (taps + 1) + lin(e, hid) + lin(hid, long_channels)
        mixer += (n - 1) * w + lin(w, w)
    elif name == "s4d":
        modes = p.get("state_dim", 64) // 2
        mixer = 2 * lin(w, w) + w + 2 * w * modes + 2 * w * modes * (1 if causal else 2) + w
    elif name == "mamba":
        n, rank, taps = p.get("state_dim", 16), -(-w // 16), 4
        branch = w * taps + w + w * (rank + 2 * n) + rank * w + w + w * n + w
        mixer = lin(w, 2 * w) + branch * (1 if causal else 2) + lin(w, w)
    elif name == "based":
        hf = 2 * p.get("feature_dim", 16)  # heads * feature_dim
        mixer = 2 * lin(w, hf) + 2 * lin(w, w)
    elif name == "mlp":
        mixer = mlp
    block = 2 * w + mixer + 2 * w + mlp
    return lin(d_in, w) + L * w + depth * block + 2 * w + lin(w, d_out)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_parameter_count(name, params, causal):
    model = build_model(name, SMALL, **TINY, causal=causal, **params)
    assert model.num_parameters() == expected_count(name, causal=causal, **params)


def test_parameter_count_paper_config():
    """width 64, depth 2, MLP x4, d_in 20, d_out 10, L 40 (the paper's primitives setting)."""
    task = make_task("multiply")
    counts = {n: build_model(n, task).num_parameters() for n in ("attention", "linear_attention", "baseconv")}
    assert counts == {"attention": 104650, "linear_attention": 104650, "baseconv": 101450}
    for name in counts:
        assert counts[name] == expected_count(name, w=64, d_in=20, d_out=10, L=40)


def test_backbone_switches_change_the_count():
    base = build_model("baseconv", SMALL, **TINY).num_parameters()
    w, L = 8, 6
    assert build_model("baseconv", SMALL, **TINY, pos_emb=False).num_parameters() == base - L * w
    assert build_model("baseconv", SMALL, **TINY, final_norm=False).num_parameters() == base - 2 * w
    assert build_model("baseconv", SMALL, **TINY, prenorm=False).num_parameters() == base - 2 * 2 * 2 * w
    no_mixer_norm = build_model("baseconv", SMALL, **TINY, prenorm=False, mlp_norm=True)
    assert no_mixer_norm.num_parameters() == base - 2 * 2 * w
    mlp = (w * 4 * w + 4 * w) + (4 * w * w + w)
    assert build_model("baseconv", SMALL, **TINY, mlp=False).num_parameters() == base - 2 * (mlp + 2 * w)
    mlp_x2 = (w * 2 * w + 2 * w) + (2 * w * w + w)
    assert build_model("baseconv", SMALL, **TINY, mlp_factor=2).num_parameters() == base - 2 * (mlp - mlp_x2)
    glu_extra = 2 * (4 * w) ** 2
    assert build_model("baseconv", SMALL, **TINY, activation="glu").num_parameters() == base + 2 * glu_extra
    assert build_model("baseconv", SMALL, **TINY, max_len=10).num_parameters() == base + 4 * w + 2 * 4 * w


# ---- backbone semantics ------------------------------------------------------------------


def test_block_is_exactly_residual_plus_mixer():
    model = build_model("baseconv", SMALL, **TINY, mlp=False).to(F64)
    block = model.blocks[0]
    x = x64((2, 6, 8))
    assert torch.equal(block(x), x + block.mixer(block.mixer_norm(x)))
    assert isinstance(block.mixer_norm, torch.nn.LayerNorm)
    off = build_model("baseconv", SMALL, **TINY, mlp=False, residual=False, prenorm=False).to(F64).blocks[0]
    assert torch.equal(off(x), off.mixer(x))


def test_forward_is_read_in_blocks_read_out():
    model = build_model("linear_attention", SMALL, **TINY).to(F64)
    u = x64((2, 5, 4))
    x = model.read_in(u) + model.pos_emb[:5]
    for block in model.blocks:
        x = block(x)
    assert torch.equal(model(u), model.read_out(model.final_norm(x)))


def test_branch_mix_defaults_to_plain_mixer_and_learns_a_skip():
    plain = build_model("baseconv", SMALL, **TINY).to(F64)
    mixed = build_model("baseconv", SMALL, **TINY, branch_mix=True).to(F64)
    u = x64((2, 6, 4))
    assert torch.equal(plain(u), mixed(u))  # (1, 0) init: same function, same weights
    with torch.no_grad():
        mixed.blocks[0].mixer.branch_skip.fill_(1.0)
    h = x64((2, 6, 8))
    mixer = mixed.blocks[0].mixer
    expected = mixer.out_proj(mixer.conv(mixer.in_proj(h)) * mixer.gate_proj(h)) + h
    assert torch.allclose(mixer(h), expected, atol=1e-14, rtol=0)


def test_longer_max_len_accepts_longer_inputs():
    model = build_model("hyena", SMALL, **TINY, max_len=9)
    assert model(torch.randn(1, 9, 4)).shape == (1, 9, 3)


# ---- determinism -------------------------------------------------------------------------


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_same_seed_same_weights(name, params):
    state = torch.get_rng_state()
    a = build_model(name, SMALL, **TINY, seed=3, **params)
    torch.manual_seed(12345)  # the global RNG plays no part
    b = build_model(name, SMALL, **TINY, seed=3, **params)
    torch.set_rng_state(state)
    c = build_model(name, SMALL, **TINY, seed=4, **params)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    u = torch.randn(2, 6, 4)
    assert torch.equal(a(u), b(u))


def test_building_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    build_model("attention", SMALL, **TINY)
    assert torch.equal(before, torch.get_rng_state())


def test_model_from_config_rebuilds_identically():
    model = build_model("baseconv", make_task("multiply"), width=16, conv_kind="long", seed=7)
    again = A.model_from_config(model.config.model_dump())
    assert again.config == model.config
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


def test_init_statistics():
    model = build_model("attention", make_task("multiply"), init_std=0.02)
    w = model.blocks[0].mixer.q_proj.weight
    assert 0.017 < w.std().item() < 0.023 and model.blocks[0].mixer.q_proj.bias.abs().max() == 0
    bound = 1 / 20**0.5
    assert model.read_in.weight.abs().max() <= bound and model.read_in.weight.abs().max() > 0.9 * bound
    fc_out = model.blocks[1].mlp.fc_out.weight.std().item()
    assert 0.007 < fc_out < 0.013  # 0.02 / sqrt(2 * depth)


# ---- errors ------------------------------------------------------------------------------


def _error(name, task=SMALL, **params) -> str:
    with pytest.raises(ModelConfigError) as info:
        build_model(name, task, **params)
    return str(info.value)


@pytest.mark.parametrize("name", ["attention", "linear_attention", "based"])
def test_heads_must_divide_width(name):
    msg = _error(name, width=10, heads=3)
    assert "heads" in msg and "width 10" in msg and "[1, 2, 5, 10]" in msg


def test_heads_do_not_constrain_mixers_without_heads():
    assert build_model("baseconv", SMALL, width=10, heads=3).config.heads == 3


@pytest.mark.parametrize(
    "params,words",
    [
        ({"depth": 0}, ["depth", ">= 1", "got 0"]),
        ({"width": 0}, ["width"]),
        ({"width": 2.5}, ["width", "integer", "2.5"]),
        ({"dropout": 0.1}, ["dropout", "unknown parameter", "parameters:", "conv_kind"]),
        ({"conv_kind": "fourier"}, ["conv_kind", "'short', 'long' or 'implicit'"]),
        ({"conv_backend": "cuda"}, ["conv_backend", "'auto'"]),
        ({"activation": "elu"}, ["activation", "'gelu'"]),
        ({"causal": "yes"}, ["causal", "boolean"]),
        ({"max_len": 3}, ["max_len", "seq_len (6)"]),
        ({"filter_emb_dim": 4}, ["filter_emb_dim", "odd"]),
        ({"d_in": 5}, ["d_in", "come from the task"]),
        ({"init_std": 0.0}, ["init_std"]),
    ],
)
def test_bad_parameters_name_the_field(params, words):
    msg = _error("baseconv", **params)
    assert msg.startswith("model 'baseconv'")
    for word in words:
        assert word in msg, (word, msg)


def test_unknown_model_lists_the_known_ones():
    msg = _error("transformer")
    assert "'transformer'" in msg
    for name in A.MODELS:
        assert name in msg


def test_mixer_specific_checks():
    assert "order" in _error("hyena", order=1)
    assert "state_dim" in _error("s4d", state_dim=7)
    assert "dt_min" in _error("s4d", dt_min=0.5, dt_max=0.1)
    assert "feature_dim" in _error("based", feature_dim=0)
    assert "state_dim" in _error("mamba", state_dim=0)
    assert "dt_rank" in _error("mamba", dt_rank=0)
    assert "conv_kind" in _error("attention", conv_kind="short")  # not an attention parameter


def test_task_without_shapes_is_rejected():
    assert "seq_len, d_in, d_out" in _error("attention", task=object())


def test_too_long_sequence_raises_at_forward():
    model = build_model("baseconv", SMALL, **TINY)
    with pytest.raises(ModelConfigError, match=r"7 positions .* at most 6 .* max_len=7"):
        model(torch.randn(1, 7, 4))
    with pytest.raises(ModelConfigError, match=r"\(batch, length, 4\)"):
        model(torch.randn(1, 6, 5))
    assert issubclass(ModelConfigError, ValueError)


# ---- gradients, dtypes -------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_gradient_reaches_every_parameter(name, params, causal):
    model = build_model(name, SMALL, **TINY, causal=causal, activation="glu", **params).to(F64)
    y = model(x64((2, 6, 4)))
    (y * x64(y.shape, seed=1)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, pname


@pytest.mark.parametrize("name", sorted(A.MODELS))
def test_float32_agrees_with_float64(name):
    """Same weights in both dtypes: outputs agree to float32 accuracy (nothing runs in half)."""
    m32 = build_model(name, SMALL, **TINY)
    m64 = build_model(name, SMALL, **TINY).to(F64)
    u = x64((2, 6, 4))
    y32, y64 = m32(u.float()), m64(u)
    assert y32.dtype == torch.float32 and y64.dtype == F64
    assert (y32.double() - y64).abs().max() <= 1e-5 * (1 + y64.abs().max())


def test_no_tf32_switched_on():
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    build_model("hyena", SMALL, **TINY)(torch.randn(1, 6, 4))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
    assert torch.backends.cuda.matmul.allow_tf32 is False  # PyTorch's default; the models never flip it
