"""Evaluation: pass@1 over k samples, the unbiased pass@k, cons@k (majority vote).

r1jax.eval.evaluate samples, verifies and summarises (the launcher's and the trainers' code);
r1jax.eval.metrics holds the pure estimators.
"""
