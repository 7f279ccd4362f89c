"""The optimizers a run can name: first-order ones, L-BFGS, and Levenberg-Marquardt (dense and matrix-free)."""
