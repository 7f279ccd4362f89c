"""Every task's targets against an independent float64 computation (numpy, explicit loops)
from the very inputs the model sees, plus the token layouts each docstring promises."""
import numpy as np
import pytest
import torch

from primitives import make_task, stream_generator

B = 3  # small batches: these tests check arithmetic, not statistics


def draw(task, dtype=torch.float64, batch=B, seed=0):
    return task.sample(batch, generator=stream_generator(seed, "train"), dtype=dtype)


def np64(t):
    return t.detach().to(torch.float64).numpy()


def assert_close(actual, expected, rtol=1e-12):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(np.abs(expected).max(), 1e-300)
    assert np.abs(actual - expected).max() <= rtol * scale, (actual, expected)


def check_cast_once(batch, dtype):
    """targets are the exact float64 targets cast once; unscored positions are zero."""
    assert batch.inputs.dtype == dtype and batch.targets.dtype == dtype
    assert batch.exact_targets.dtype == torch.float64
    assert torch.equal(batch.targets, batch.exact_targets.to(dtype))
    assert not batch.exact_targets[:, ~batch.mask].any()


# ---- token-wise primitives ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_read_copies_token_i_to_position_j(dtype):
    task = make_task("read", length=7, width=5, i=2, j=4, a=1, b=4)
    batch = draw(task, dtype)
    check_cast_once(batch, dtype)
    x, y = np64(batch.inputs), np64(batch.exact_targets)
    assert y.shape == (B, 7, 3) and batch.mask.all()
    for n in range(B):
        for t in range(7):
            source = 2 if t == 4 else t
            assert np.array_equal(y[n, t], x[n, source, 1:4])


def test_read_default_positions_are_drawn_from_task_seed_with_i_le_j():
    pairs = {make_task("read", seed=s).positions for s in range(20)}
    assert all(0 <= i <= j < 40 for i, j in pairs) and len(pairs) > 5
    assert make_task("read", seed=3).positions == make_task("read", seed=3).positions
    task = make_task("read", seed=1)
    i, j = task.positions
    assert task.d_in == 20 and task.d_out == 20 and task.seq_len == 40
    x, y = np64(draw(task).inputs), np64(draw(task).exact_targets)
    assert np.array_equal(y[:, j], x[:, i]) and np.array_equal(np.delete(y, j, 1), np.delete(x, j, 1))
    assert make_task("read", j=3, seed=5).positions[0] <= 3
    assert make_task("read", i=30, seed=5).positions[1] >= 30


def test_linear_explicit_matrix():
    H = [[1.0, -2.0], [0.5, 0.0], [3.0, 0.25]]
    task = make_task("linear", length=4, width=3, matrix=H)
    batch = draw(task, torch.float32)
    check_cast_once(batch, torch.float32)
    x, y = np64(batch.inputs), np64(batch.exact_targets)
    expected = np.array([[[sum(x[n, t, r] * H[r][c] for r in range(3)) for c in range(2)] for t in range(4)] for n in range(B)])
    assert_close(y, expected, 1e-15)
    assert task.d_out == 2


def test_linear_default_is_one_output_c_times_3_gaussian_from_task_stream():
    task = make_task("linear", seed=7)
    c = 3.0 * torch.randn(20, 1, generator=stream_generator(7, "task"), dtype=torch.float64)
    assert torch.equal(task.H, c) and task.d_out == 1
    batch = draw(task)
    assert_close(np64(batch.exact_targets), np64(batch.inputs) @ c.numpy(), 1e-14)
    assert make_task("linear", out_width=4).H.shape == (20, 4)
    assert not torch.equal(make_task("linear", seed=8).H, c)


@pytest.mark.parametrize(
    "name, params, fn",
    [
        ("multiply", {}, lambda x: x[..., :10] * x[..., 10:]),
        ("multiply", dict(width=6, a=1, b=3, out_width=2), lambda x: x[..., 1:3] * x[..., 3:5]),
        ("square", {}, lambda x: x * x),
        ("identity", {}, lambda x: x),
    ],
)
def test_elementwise_tasks(name, params, fn):
    task = make_task(name, length=5, **params)
    batch = draw(task, torch.float32)
    check_cast_once(batch, torch.float32)
    assert np.array_equal(np64(batch.exact_targets), fn(np64(batch.inputs)))


# ---- least-squares tasks: decode the documented layouts ------------------------------


def decode_gd_layout(batch, D, N):
    """token 0 = [x0, 0], tokens 1..N = [a_i, b_i]"""
    u = np64(batch.inputs)
    assert u.shape[1:] == (N + 1, D + 1)
    assert np.all(u[:, 0, D] == 0)
    return u[:, 1:, :D], u[:, 1:, D], u[:, 0, :D]


def only_last_scored(batch):
    mask = batch.mask.numpy()
    assert mask[-1] and mask.sum() == 1
    return np64(batch.exact_targets)[:, -1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("params", [{}, dict(D=3, N=7, sigma=0.5), dict(kappa=100.0)])
def test_least_squares_target_is_lstsq_of_inputs(dtype, params):
    task = make_task("least_squares", **params)
    D, N = task.D, task.N
    batch = draw(task, dtype)
    check_cast_once(batch, dtype)
    u = np64(batch.inputs)
    assert u.shape[1:] == (N, D + 1) and batch.targets.shape[1:] == (N, D)
    target = only_last_scored(batch)
    for n in range(B):
        x_ls = np.linalg.lstsq(u[n, :, :D], u[n, :, D], rcond=None)[0]
        assert_close(target[n], x_ls, 1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gd_step_target_is_explicit_gradient(dtype):
    task = make_task("gd_step", D=4, N=9, sigma=0.1)
    batch = draw(task, dtype)
    check_cast_once(batch, dtype)
    A, b, x0 = decode_gd_layout(batch, 4, 9)
    target = only_last_scored(batch)
    for n in range(B):
        grad = [sum(A[n, i, d] * (A[n, i] @ x0[n] - b[n, i]) for i in range(9)) / 9 for d in range(4)]
        assert_close(target[n], grad, 1e-13)


@pytest.mark.parametrize("name, params", [("gd_step", {}), ("gd_k", dict(k=3, eta=0.3)), ("newton_step", {})])
def test_broadcast_layout_holds_the_same_problems_with_x0_in_every_token(name, params):
    D, N = 4, 9
    first = make_task(name, D=D, N=N, **params)
    broad = make_task(name, D=D, N=N, layout="broadcast", **params)
    assert (broad.seq_len, broad.d_in, broad.d_out) == (N, 2 * D + 1, D)
    batch = draw(broad, torch.float32)
    check_cast_once(batch, torch.float32)
    u = np64(batch.inputs)
    assert u.shape[1:] == (N, 2 * D + 1)
    A, b, x0 = decode_gd_layout(draw(first, torch.float32), D, N)
    assert np.array_equal(u[:, :, :D], A) and np.array_equal(u[:, :, D], b)
    assert np.array_equal(u[:, :, D + 1:], np.repeat(x0[:, None], N, axis=1))
    # the same draws, so the same targets, read at the last position of each layout
    assert np.array_equal(only_last_scored(batch), only_last_scored(draw(first, torch.float32)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gd_k_target_is_kth_iterate(dtype):
    task = make_task("gd_k", D=3, N=8, k=5, eta=0.3)
    batch = draw(task, dtype)
    check_cast_once(batch, dtype)
    A, b, x = decode_gd_layout(batch, 3, 8)
    for _ in range(5):
        x = x - 0.3 * np.einsum("bnd,bn->bd", A, np.einsum("bnd,bd->bn", A, x) - b) / 8
    assert_close(only_last_scored(batch), x, 1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_newton_step_target(dtype):
    task = make_task("newton_step", sigma=0.3)
    batch = draw(task, dtype)
    check_cast_once(batch, dtype)
    A, b, _ = decode_gd_layout(batch, 5, 20)
    target = only_last_scored(batch)
    for n in range(B):
        assert_close(target[n], np.linalg.lstsq(A[n], b[n], rcond=None)[0], 1e-12)


def test_newton_step_with_inverse_tokens():
    D, N = 3, 6
    task = make_task("newton_step", D=D, N=N, with_inverse=True)
    assert task.seq_len == N + 1 + D
    batch = draw(task, torch.float32)
    check_cast_once(batch, torch.float32)
    u = np64(batch.inputs)
    x0, A, b, M_inv = u[:, 0, :D], u[:, 1 : N + 1, :D], u[:, 1 : N + 1, D], u[:, N + 1 :, :D]
    assert np.all(u[:, N + 1 :, D] == 0) and np.all(u[:, 0, D] == 0)
    for n in range(B):
        exact_inv = np.linalg.inv(A[n].T @ A[n] / N)
        assert_close(M_inv[n], exact_inv, 1e-6)  # the float32-rounded inverse
        grad = A[n].T @ (A[n] @ x0[n] - b[n]) / N
        assert_close(np64(batch.exact_targets)[n, -1], x0[n] - M_inv[n] @ grad, 1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "params",
    [{}, dict(operand="M"), dict(init="perturbed", perturbation=0.3), dict(start_iteration=3, D=3, N=4)],
)
def test_newton_schulz_layout_and_target(dtype, params):
    task = make_task("newton_schulz", **params)
    D, N = task.D, task.N
    n_op = N if task.operand == "A" else D
    batch = draw(task, dtype)
    check_cast_once(batch, dtype)
    u, y = np64(batch.inputs), np64(batch.exact_targets)
    assert u.shape[1:] == (n_op + D, 2 * D) and y.shape[1:] == (n_op + D, D)
    assert batch.mask.tolist() == [False] * n_op + [True] * D
    assert np.all(u[:, :n_op, D:] == 0) and np.all(u[:, n_op:, :D] == 0)
    operand, X = u[:, :n_op, :D], u[:, n_op:, D:]
    for n in range(B):
        M = operand[n].T @ operand[n] / N if task.operand == "A" else operand[n]
        expected = np.zeros((D, D))
        for r in range(D):  # row r of X (2I - M X), by explicit sums
            for c in range(D):
                MX_c = [sum(M[p, q] * X[n, q, c] for q in range(D)) for p in range(D)]
                expected[r, c] = 2 * X[n, r, c] - sum(X[n, r, p] * MX_c[p] for p in range(D))
        assert_close(y[n, n_op:], expected, 1e-12)


def test_newton_schulz_initial_iterates():
    batch = draw(make_task("newton_schulz"))
    u = np64(batch.inputs)
    for n in range(B):
        A, X = u[n, :20, :5], u[n, 20:, 5:]
        M = A.T @ A / 20
        assert_close(X, M.T / (np.linalg.norm(M, 1) * np.linalg.norm(M, np.inf)), 1e-14)
    batch = draw(make_task("newton_schulz", init="perturbed", perturbation=0.3))
    u = np64(batch.inputs)
    for n in range(B):
        A, X = u[n, :20, :5], u[n, 20:, 5:]
        residual = np.eye(5) - A.T @ A / 20 @ X
        assert abs(np.linalg.norm(residual, 2) - 0.3) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_icl_regression_layout_and_targets(dtype):
    D, N = 3, 8
    task = make_task("icl_regression", D=D, N=N)
    batch = draw(task, dtype)
    check_cast_once(batch, dtype)
    u, y = np64(batch.inputs), np64(batch.exact_targets)
    assert u.shape[1:] == (2 * N, D + 1) and y.shape[1:] == (2 * N, 1)
    x_tok, y_tok = u[:, 0::2], u[:, 1::2]
    assert np.all(x_tok[..., D] == 0) and np.all(y_tok[..., :D] == 0)
    assert batch.mask.tolist() == [t % 2 == 0 and t // 2 >= D for t in range(2 * N)]
    for n in range(B):
        for i in range(D, N):
            # the pairs before x_i determine w: fit them, predict y_i
            w = np.linalg.lstsq(x_tok[n, :i, :D], y_tok[n, :i, D], rcond=None)[0]
            tol = 1e-10 if dtype == torch.float64 else 1e-4
            assert abs(w @ x_tok[n, i, :D] - y[n, 2 * i, 0]) <= tol * (1 + abs(y[n, 2 * i, 0]))
        # the y token holds the target, rounded once (targets are zero at unscored positions)
        assert np.array_equal(y_tok[n, D:, D], np64(batch.exact_targets.to(dtype))[n, 2 * D :: 2, 0])


def test_icl_regression_score_from_and_noise():
    task = make_task("icl_regression", D=2, N=5, score_from=0, sigma=0.5)
    batch = draw(task, batch=200)
    assert batch.mask.tolist() == [t % 2 == 0 for t in range(10)]
    u, y = np64(batch.inputs), np64(batch.exact_targets)
    # noisy: y_i is not a linear function of x_i across the first D + 1 pairs
    resid = [np.linalg.lstsq(u[n, 0:6:2, :2], y[n, 0:6:2, 0], rcond=None)[1] for n in range(5)]
    assert all(r.size and r[0] > 1e-6 for r in resid)
