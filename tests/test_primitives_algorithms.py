"""Algebra of the reference algorithms and of the least-squares sampler."""
import numpy as np
import pytest
import torch

from primitives import algorithms as alg
from primitives import sample_least_squares, stream_generator


def problems(batch=8, seed=0, **kw):
    return sample_least_squares(batch, generator=stream_generator(seed, "train"), **kw)


def rel_err(x, ref):
    return ((x - ref).norm(dim=-1) / ref.norm(dim=-1)).max().item()


def test_gradient_and_hessian_against_numpy():
    p = problems(batch=2, D=3, N=7, sigma=0.2)
    for n in range(2):
        A, b, x = p.A[n].numpy(), p.b[n].numpy(), p.x0[n].numpy()
        np.testing.assert_allclose(alg.gradient(p.A, p.b, p.x0)[n].numpy(), A.T @ (A @ x - b) / 7, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(alg.hessian(p.A)[n].numpy(), A.T @ A / 7, rtol=1e-13)


def test_gd_iterates_shape_and_first_steps():
    p = problems(batch=2, D=3, N=6)
    xs = alg.gd_iterates(p.A, p.b, p.x0, 0.4, 3)
    assert xs.shape == (2, 4, 3)
    assert torch.equal(xs[:, 0], p.x0)
    assert torch.allclose(xs[:, 1], p.x0 - 0.4 * alg.gradient(p.A, p.b, p.x0), rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        alg.gd_iterates(p.A, p.b, p.x0, 0.4, -1)


def test_gd_converges_to_solution_of_consistent_system():
    p = problems(D=5, N=20)
    assert rel_err(p.x_ls, p.x_star) < 1e-13  # float64: b = A x* exactly up to one rounding
    x_k = alg.gd_iterates(p.A, p.b, p.x0, 0.5, 400)[:, -1]
    assert rel_err(x_k, p.x_star) < 1e-12
    # and the error contracts as the spectrum says: |1 - eta lambda| per step
    lam = torch.linalg.eigvalsh(alg.hessian(p.A))
    rate = torch.maximum((1 - 0.5 * lam[:, 0]).abs(), (1 - 0.5 * lam[:, -1]).abs())
    e20 = (alg.gd_iterates(p.A, p.b, p.x0, 0.5, 20)[:, -1] - p.x_star).norm(dim=-1)
    assert torch.all(e20 <= rate**20 * (p.x0 - p.x_star).norm(dim=-1) * (1 + 1e-9))


@pytest.mark.parametrize("x0_scale", [0.0, 1.0, 100.0])
@pytest.mark.parametrize("kappa", [None, 30.0])
def test_one_newton_step_lands_on_solution(x0_scale, kappa):
    p = problems(D=5, N=20, kappa=kappa, sigma=0.5)
    x1 = alg.newton_step(p.A, p.b, x0_scale * p.x0)
    assert rel_err(x1, p.x_ls) < 1e-12
    for n in range(2):  # least-squares solution checked independently
        ref = np.linalg.lstsq(p.A[n].numpy(), p.b[n].numpy(), rcond=None)[0]
        assert np.linalg.norm(p.x_ls[n].numpy() - ref) <= 1e-12 * np.linalg.norm(ref)


def test_newton_schulz_converges_quadratically_from_scaled_transpose():
    p = problems(batch=16, D=5, N=20)
    M = alg.hessian(p.A)
    M_inv = torch.linalg.inv(M)
    X0 = alg.newton_schulz_init(M)
    assert torch.linalg.matrix_norm(torch.eye(5) - M @ X0, ord=2).max() < 1  # convergence guarantee
    Xs = alg.newton_schulz_iterates(M, X0, 40)
    err = torch.linalg.matrix_norm(Xs - M_inv.unsqueeze(1)) / torch.linalg.matrix_norm(M_inv).unsqueeze(1)
    # X_{k+1} - M^-1 = -(X_k - M^-1) M (X_k - M^-1): e_{k+1} <= ||M|| ||M^-1|| e_k^2 (relative errors)
    bound = (torch.linalg.matrix_norm(M, ord=2) * torch.linalg.matrix_norm(M_inv)).unsqueeze(1)
    resolved = err[:, :-1] > 1e-7  # above that, rounding is negligible against e_k^2
    ratio = err[:, 1:] / err[:, :-1] ** 2
    assert torch.all(ratio[resolved] <= bound.expand_as(ratio)[resolved] * (1 + 1e-6))
    steps_needed = (err < 1e-14).float().argmax(dim=1)
    assert torch.all(err[:, -1] < 1e-14) and steps_needed.max() <= 20, steps_needed
    # once in the quadratic regime the number of correct digits doubles: 1e-2 -> < 1e-13 in 3 steps
    k = (err < 1e-2).float().argmax(dim=1)
    assert torch.all(err[torch.arange(16), k + 3] < 1e-13)


def test_newton_schulz_step_squares_the_residual():
    M = alg.hessian(problems(batch=4, D=4, N=9).A)
    X = torch.linalg.inv(M) * 0.9
    R = torch.eye(4) - M @ X
    assert torch.allclose(torch.eye(4) - M @ alg.newton_schulz_step(M, X), R @ R, atol=1e-15)


@pytest.mark.parametrize("kappa", [1.0, 10.0, 1e4])
def test_sampler_condition_number(kappa):
    p = problems(batch=6, D=5, N=20, kappa=kappa)
    s = torch.linalg.svdvals(p.A)
    cond = s[:, 0] / s[:, -1]
    assert torch.allclose(cond, torch.full_like(cond, kappa), rtol=1e-10)
    # singular values of A / sqrt(N) log-spaced in [1, kappa]: M = A^T A / N has spectrum [1, kappa^2]
    expected = torch.tensor(kappa, dtype=torch.float64) ** torch.linspace(1, 0, 5, dtype=torch.float64)
    assert torch.allclose(s / 20**0.5, expected.expand_as(s), rtol=1e-13 * kappa)


def test_sampler_noise_scales_and_rounding():
    p = problems(batch=4, D=3, N=10, sigma=0.7, a_scale=4.0, x_scale=0.5, dtype=torch.float32)
    for t in (p.A, p.b, p.x0):  # inputs: float64 tensors holding float32 values
        assert t.dtype == torch.float64 and torch.equal(t.to(torch.float32).to(torch.float64), t)
    residual = p.b - (p.A @ p.x_star.unsqueeze(-1)).squeeze(-1)
    assert 0.2 < residual.std().item() < 1.5  # the noise, sigma = 0.7
    assert 2.0 < p.A.std().item() < 6.0
    q = problems(batch=4, D=3, N=10)
    assert torch.equal(p.A, (4.0 * q.A).to(torch.float32).to(torch.float64))  # same draws, scaled
    assert problems(batch=2, D=5, N=3).x_ls is None  # underdetermined: no unique solution
