"""The optimizers a run can name: first-order ones, L-BFGS and the schedules (optimizers.py), and
Levenberg-Marquardt: its config and the dense solver (levenberg_marquardt.py), the matrix-free solver
(matrix_free.py) and its conjugate gradients and preconditioner (cg.py)."""
