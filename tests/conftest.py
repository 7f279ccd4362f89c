"""Shared fixtures for the unit tests."""
import pytest
import torch


def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: training runs are then reproducible to the bit."""
    yield from _one_torch_thread()


@pytest.fixture(scope="module")
def one_thread_module():
    """one_thread for a whole module (its module-scoped fixtures included)."""
    yield from _one_torch_thread()


@pytest.fixture
def tf32_emulating_interpreter(monkeypatch):
    """Make the interpreter's tl.dot honour input_precision as a GPU does, and record it.

    The stock interpreter computes every fp32 dot in full precision whatever input_precision
    says, so a kernel that silently used TF32 would still pass on CPU. Here TF32 rounds both
    operands to 10 mantissa bits (relative error ~1e-3 per product) and TF32x3 uses the
    three-pass split, so the accuracy tests that use it fail if a dot runs in TF32.
    """
    if torch.cuda.is_available():
        pytest.skip("emulation is for the interpreter; on a GPU the hardware does it")
    import numpy as np
    from triton.runtime import interpreter

    real_create_dot = interpreter.InterpreterBuilder.create_dot
    seen = []

    def round_to_tf32(x):
        # TF32 keeps 10 of fp32's 23 mantissa bits: round to nearest even on the low 13 bits.
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0xFFF + ((bits >> 13) & 1)) & 0xFFFFE000
        return bits.astype(np.uint32).view(np.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        name = getattr(input_precision, "name", str(input_precision))
        seen.append(name)
        if a.data.dtype == np.float32 and name in ("TF32", "TF32x3"):
            a_big, b_big = round_to_tf32(a.data), round_to_tf32(b.data)
            if name == "TF32":
                product = np.matmul(a_big, b_big)
            else:
                a_small = round_to_tf32(a.data - a_big)
                b_small = round_to_tf32(b.data - b_big)
                product = np.matmul(a_big, b_small) + np.matmul(a_small, b_big) + np.matmul(a_big, b_big)
            return interpreter.TensorHandle(product.astype(np.float32) + d.data, d.dtype.scalar)
        return real_create_dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)
    return seen
