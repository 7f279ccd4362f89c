"""Each mixer against a plain float64 re-statement of its formula, plus a tiny training run."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import kernels
from architectures import build_model
from architectures.mixers import filters
from architectures.mixers.based import taylor_features
from architectures.mixers.mamba import selective_scan
from architectures.mixers.s4d import ssm_kernel
from primitives import make_task, stream_generator

torch.set_num_threads(1)

F64 = torch.float64
SHAPES = SimpleNamespace(seq_len=7, d_in=3, d_out=2)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def mixer_of(name, **params):
    """The first block's mixer of a float64 model, with O(1) weights so every term matters."""
    params = {"init_std": 0.5, **params}
    model = build_model(name, SHAPES, width=6, depth=1, heads=2, **params).to(F64)
    return model.blocks[0].mixer


def dense_conv(u, k, k_rev=None):
    """y[t] = sum_{s<=t} k[t-s] u[s] + sum_{s>t} k_rev[s-t-1] u[s], by explicit loops."""
    b, length, d = u.shape
    y = torch.zeros_like(u)
    for t in range(length):
        for s in range(length):
            if s <= t:
                y[:, t] += k[:, t - s] * u[:, s]
            elif k_rev is not None:
                y[:, t] += k_rev[:, s - t - 1] * u[:, s]
    return y


def close(a, b, tol=1e-12):
    return (a - b).abs().max().item() <= tol * (1 + b.abs().max().item())


# ---- attention family --------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
def test_attention_is_softmax_attention(causal):
    mixer = mixer_of("attention", causal=causal)
    h = rand(2, 7, 6)
    q, k, v = (p(h).view(2, 7, 2, 3).transpose(1, 2) for p in (mixer.q_proj, mixer.k_proj, mixer.v_proj))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert close(mixer(h), mixer.out_proj(ref.transpose(1, 2).reshape(2, 7, 6)))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_linear_attention_is_unnormalised_qkv(causal, scale):
    mixer = mixer_of("linear_attention", causal=causal, attn_scale=scale)
    h = rand(2, 7, 6)
    q, k, v = mixer.q_proj(h), mixer.k_proj(h), mixer.v_proj(h)
    c = 1 / math.sqrt(3) if scale is None else scale
    y = torch.zeros_like(h)
    for head in (slice(0, 3), slice(3, 6)):
        for t in range(7):
            for s in range(t + 1 if causal else 7):
                y[:, t, head] += c * (q[:, t, head] * k[:, s, head]).sum(-1, keepdim=True) * v[:, s, head]
    assert close(mixer(h), mixer.out_proj(y))


def test_taylor_features_expand_exp():
    q, k = rand(5, 4), rand(5, 4, seed=1)
    s = (q * k).sum(-1) / 2.0  # q.k / sqrt(d), d = 4
    assert close((taylor_features(q) * taylor_features(k)).sum(-1), 1 + s + s**2 / 2)
    assert taylor_features(q).shape == (5, 1 + 4 + 16)


@pytest.mark.parametrize("causal", [True, False])
def test_based_is_normalised_taylor_attention(causal):
    mixer = mixer_of("based", causal=causal, feature_dim=4)
    h = rand(2, 7, 6)
    q, k, v = mixer.q_proj(h), mixer.k_proj(h), mixer.v_proj(h)  # q, k: (2, 7, heads * 4)
    y = torch.zeros_like(h)
    for head in range(2):
        qk_cols, v_cols = slice(4 * head, 4 * head + 4), slice(3 * head, 3 * head + 3)
        qh, kh, vh = q[..., qk_cols], k[..., qk_cols], v[..., v_cols]
        for t in range(7):
            seen = slice(0, t + 1) if causal else slice(0, 7)
            s = (qh[:, t : t + 1] * kh[:, seen]).sum(-1) / 2.0
            weight = 1 + s + s**2 / 2
            y[:, t, v_cols] = (weight[..., None] * vh[:, seen]).sum(1) / weight.sum(1, keepdim=True)
    assert close(mixer(h), mixer.out_proj(y))


# ---- convolutions ------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kind", ["short", "long", "implicit"])
def test_baseconv_is_gated_conv(kind, causal):
    mixer = mixer_of("baseconv", conv_kind=kind, causal=causal)
    h = rand(2, 7, 6)
    if kind == "implicit":
        k, k_rev = mixer.conv.kernels(F64, "cpu")
    else:
        k, k_rev = mixer.conv.filter, mixer.conv.filter_rev
        assert k.shape == (6, 7) and (k_rev is None) == causal
    ref = mixer.out_proj(dense_conv(mixer.in_proj(h), k, k_rev) * mixer.gate_proj(h))
    assert close(mixer(h), ref)


@pytest.mark.parametrize("conv_bias", [False, True])
@pytest.mark.parametrize("causal", [True, False])
def test_baseconv_channels_first_gradients_match_the_plain_formula(causal, conv_bias):
    """The mixer computes its conv channels first; every gradient equals the plain (B, L, D) formula's."""
    mixer = mixer_of("baseconv", causal=causal, conv_bias=conv_bias, branch_mix=True)
    h = rand(3, 7, 6, seed=4).requires_grad_()
    grad_y = rand(3, 7, 6, seed=5)
    params = [p for p in mixer.parameters()]
    got = torch.autograd.grad(mixer(h), [h, *params], grad_y)
    conv = mixer.conv
    plain = dense_conv(mixer.in_proj(h), conv.filter, conv.filter_rev) + (conv.bias if conv_bias else 0)
    y = mixer.out_proj(plain * mixer.gate_proj(h))
    y = mixer.branch_out * y + mixer.branch_skip * h
    want = torch.autograd.grad(y, [h, *params], grad_y, allow_unused=True)
    names = ["h"] + [n for n, _ in mixer.named_parameters()]
    for name, a, b in zip(names, got, want):
        assert close(a, b), name


def test_long_filter_starts_near_identity():
    k = mixer_of("baseconv", conv_kind="long", init_std=0.02).conv.filter.detach()
    assert (k[:, 0] - 1).abs().max() < 0.1 and k[:, 1:].abs().max() < 0.1 and k[:, 1:].abs().max() > 0


def test_short_filter_is_conv1d_default_init():
    k = build_model("baseconv", make_task("multiply"), width=64).blocks[0].mixer.conv.filter.detach()
    bound = 1 / math.sqrt(40)
    assert k.abs().max() <= bound and k.abs().max() > 0.95 * bound and abs(k.mean()) < 0.05 * bound


def test_conv_bias_is_added_per_channel():
    mixer = mixer_of("baseconv", conv_bias=True)
    with torch.no_grad():
        mixer.conv.bias.copy_(rand(6, seed=3))
    z = rand(2, 7, 6)
    assert close(mixer.conv(z), dense_conv(z, mixer.conv.filter) + mixer.conv.bias)


def test_conv_backend_reaches_the_kernel(monkeypatch):
    seen = []
    real = kernels.causal_conv

    def spy(u, k, *, backend="auto", **layout):
        seen.append(backend)
        return real(u, k, backend="auto", **layout)

    monkeypatch.setattr(kernels, "causal_conv", spy)
    for name in ("baseconv", "hyena", "s4d"):
        mixer_of(name, conv_backend="direct")(rand(1, 7, 6))
    assert seen and set(seen) == {"direct"}


def test_positional_features():
    z = filters.positional_features(8, 5, dtype=F64, device="cpu")
    assert z.shape == (8, 5)
    assert torch.equal(z[:, 0], torch.arange(8, dtype=F64) / 7)
    w = 2 * math.pi * torch.arange(8, dtype=F64) / 8
    assert close(z[:, 2], torch.cos(w * 1.0)) and close(z[:, 4], -torch.sin(w * 1.0))


@pytest.mark.parametrize("causal", [True, False])
def test_hyena_order_2_is_gate_conv_gate(causal):
    mixer = mixer_of("hyena", causal=causal)
    h = rand(2, 7, 6)
    z = mixer.in_proj(h)
    pad = (2, 0) if causal else (1, 1)
    z = F.conv1d(F.pad(z.transpose(1, 2), pad), mixer.short_filter, mixer.short_bias, groups=18)
    z = z.transpose(1, 2)
    x0, x1, v = z[..., :6], z[..., 6:12], z[..., 12:]
    k, k_rev = mixer.filter_fn.kernels(F64, "cpu")
    assert k.shape == (6, 7) and (k_rev is None) == causal
    v = v * x1
    v = dense_conv(v, k, k_rev) + mixer.filter_bias[0] * v
    assert close(mixer(h), mixer.out_proj(v * x0))


def test_hyena_filters_decay():
    k, _ = mixer_of("hyena", init_std=1.0).filter_fn.kernels(F64, "cpu")
    early, late = k[:, :2].abs().mean(), k[:, -2:].abs().mean()
    assert late < early


def test_ssm_kernel_matches_the_recurrence():
    """ZOH-discretised diagonal SSM, stepped by hand, equals the convolution kernel."""
    mixer = mixer_of("s4d", state_dim=8)
    dt = mixer.log_dt.exp()[:, None]
    A = torch.complex(-mixer.log_A_real.exp(), mixer.A_imag)
    C = torch.view_as_complex(mixer.C.contiguous())
    u = rand(2, 7, 6)
    state = torch.zeros(2, 6, 4, dtype=torch.complex128)
    ys = []
    for t in range(7):
        state = torch.exp(dt * A) * state + ((torch.exp(dt * A) - 1) / A) * u[:, t, :, None]
        ys.append(2 * (C * state).sum(-1).real)
    y_rec = torch.stack(ys, dim=1)
    k = ssm_kernel(mixer.log_dt, mixer.log_A_real, mixer.A_imag, mixer.C, 7)
    assert close(dense_conv(u, k), y_rec)


@pytest.mark.parametrize("causal", [True, False])
def test_s4d_mixer(causal):
    mixer = mixer_of("s4d", state_dim=8, causal=causal)
    h = rand(2, 7, 6)
    z = mixer.in_proj(h)
    k, k_rev = mixer.kernels(7)
    assert (k_rev is None) == causal
    ref = mixer.out_proj(F.gelu(dense_conv(z, k, k_rev) + mixer.D * z))
    assert close(mixer(h), ref)
    dt = mixer.log_dt.exp()
    assert dt.min() >= 1e-3 - 1e-12 and dt.max() <= 1e-1 + 1e-12


def test_depthwise_conv_non_causal_matches_dense():
    u, k, k_rev = rand(2, 5, 3), rand(3, 9, seed=1), rand(3, 8, seed=2)
    assert close(filters.depthwise_conv(u, k, k_rev, "auto"), dense_conv(u, k, k_rev))
    assert close(filters.depthwise_conv(u, k, None, "auto"), dense_conv(u, k))


# ---- training sanity ---------------------------------------------------------------------


def test_baseconv_learns_multiply_quickly():
    """200 Adam steps, batch 64, float32: a 1-block BaseConv fits MULTIPLY to MSE < 1e-3."""
    task = make_task("multiply", length=8, width=4)
    model = build_model("baseconv", task, width=32, depth=1, mlp=False, prenorm=False, final_norm=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = stream_generator(0, "train")
    for _ in range(200):
        batch = task.sample(64, generator=gen, dtype=torch.float32)
        loss = task.loss(model(batch.inputs), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_out = task.sample(256, generator=stream_generator(0, "eval"), dtype=torch.float32)
    with torch.no_grad():
        mse = task.metrics(model(held_out.inputs), held_out)["mse"]
    assert mse < 1e-3, mse


# ---- selective state space (mamba) -------------------------------------------------------


def closed_form_scan(x, dt, A, B, C, D):
    """s_t = sum_{j<=t} exp(A * sum_{j<k<=t} dt_k) dt_j B_j x_j: the recurrence unrolled."""
    batch, length, inner = x.shape
    y = torch.zeros_like(x)
    for t in range(length):
        for j in range(t + 1):
            decay = torch.exp(dt[:, j + 1 : t + 1].sum(1)[:, :, None] * A)  # (batch, inner, N)
            contrib = decay * (dt[:, j, :, None] * x[:, j, :, None]) * B[:, j, None, :]
            y[:, t] += torch.einsum("bin,bn->bi", contrib, C[:, t])
    return y + D * x


def test_selective_scan_is_the_unrolled_recurrence():
    x, dt = rand(2, 6, 3, seed=1), F.softplus(rand(2, 6, 3, seed=2))
    A, B, C, D = -rand(3, 4, seed=3).exp(), rand(2, 6, 4, seed=4), rand(2, 6, 4, seed=5), rand(3, seed=6)
    assert close(selective_scan(x, dt, A, B, C, D), closed_form_scan(x, dt, A, B, C, D))


@pytest.mark.parametrize("causal", [True, False])
def test_mamba_is_gated_selective_scan(causal):
    mixer = mixer_of("mamba", state_dim=4, causal=causal)
    h = rand(2, 7, 6)
    x, z = mixer.in_proj(h).chunk(2, dim=-1)

    def branch(m, x):
        u = F.silu(dense_conv(x, F.pad(m.conv_filter, (0, 7 - m.conv_filter.shape[1]))) + m.conv_bias)
        dt_low, B, C = m.x_proj(u).split([m.config.rank, 4, 4], dim=-1)
        dt = F.softplus(m.dt_proj(dt_low) + m.dt_bias)
        return closed_form_scan(u, dt, -m.A_log.exp(), B, C, m.D)

    y = branch(mixer.forward_branch, x)
    if not causal:
        y = y + branch(mixer.backward_branch, x.flip(1)).flip(1)
    assert close(mixer(h), mixer.out_proj(y * F.silu(z)))


def test_mamba_decay_depends_on_the_input():
    """Selectivity: dt (and so how much of the past a token keeps) is a function of the token."""
    branch = mixer_of("mamba", state_dim=4).forward_branch
    x = rand(1, 7, 6)
    dts = []
    for scale in (1.0, 3.0):
        u = F.silu(dense_conv(x * scale, F.pad(branch.conv_filter, (0, 3))) + branch.conv_bias)
        dts.append(F.softplus(branch.dt_proj(branch.x_proj(u)[..., : branch.config.rank]) + branch.dt_bias))
    assert (dts[0] - dts[1]).abs().max() > 1e-3
    lo, hi = math.log(1e-3), math.log(1e-1)  # init: softplus(dt_bias) log-uniform in [dt_min, dt_max]
    dt0 = F.softplus(branch.dt_bias).log()
    assert dt0.min() >= lo - 1e-9 and dt0.max() <= hi + 1e-9
