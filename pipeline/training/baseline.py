"""Order-blind baseline: logistic regression on per-feature mean and std over time.

Owns: the reference accuracy a model that ignores temporal order reaches on the same split: binary
logistic regression for two classes, multinomial (softmax) logistic regression for k >= 3, both fitted
by Newton's method with a small L2 penalty.
Imports: numpy only. Reads/writes: nothing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["order_blind_features", "order_blind_accuracy"]


def order_blind_features(X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T, F) -> (N, 2F): mean and std of each feature over each row's real timesteps."""
    valid = (np.arange(X.shape[1])[None, :] < lengths[:, None])[..., None]  # (N, T, 1)
    n = lengths[:, None].astype(np.float64)
    mean = (X * valid).sum(axis=1) / n
    var = (((X - mean[:, None, :]) ** 2) * valid).sum(axis=1) / n
    return np.concatenate([mean, np.sqrt(var)], axis=1)


def _fit_logistic(Z: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Newton's method for L2-regularised logistic regression; returns weights incl. bias."""
    A = np.hstack([Z, np.ones((len(Z), 1))])
    w = np.zeros(A.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(A @ w, -30, 30)))
        grad = A.T @ (p - y) + l2 * w
        hess = (A * (p * (1 - p))[:, None]).T @ A + l2 * np.eye(A.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _softmax(S: np.ndarray) -> np.ndarray:
    E = np.exp(S - S.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def _fit_multinomial(Z: np.ndarray, y: np.ndarray, k: int, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Newton's method for L2-regularised softmax regression over k classes; returns weights (d + 1, k) incl. bias."""
    A = np.hstack([Z, np.ones((len(Z), 1))])  # (N, d)
    n, d = A.shape
    Y = np.eye(k)[y]                           # (N, k)
    W = np.zeros((d, k))
    for _ in range(iters):
        P = _softmax(A @ W)                    # (N, k)
        grad = (A.T @ (P - Y)).T.reshape(-1) + l2 * W.T.reshape(-1)  # (k * d,), class-major
        # Hessian blocks (c, c'): sum_i (P_ic [c == c'] - P_ic P_ic') a_i a_i^T
        curv = np.einsum("ic,cj->icj", P, np.eye(k)) - np.einsum("ic,ij->icj", P, P)  # (N, k, k)
        hess = np.einsum("icj,ia,ib->cajb", curv, A, A, optimize=True).reshape(k * d, k * d) + l2 * np.eye(k * d)
        step = np.linalg.solve(hess, grad).reshape(k, d).T
        W -= step
        if np.abs(step).max() < 1e-8:
            break
    return W


def order_blind_accuracy(
    X_train: np.ndarray, len_train: np.ndarray, y_train: np.ndarray,
    X_test: np.ndarray, len_test: np.ndarray, y_test: np.ndarray, n_classes: int = 2,
) -> float:
    """Test accuracy of logistic regression on order-blind summary features (y: class indices 0..n_classes-1)."""
    Z_train = order_blind_features(X_train, len_train)
    Z_test = order_blind_features(X_test, len_test)
    mu, sd = Z_train.mean(axis=0), Z_train.std(axis=0) + 1e-12
    A = np.hstack([(Z_test - mu) / sd, np.ones((len(Z_test), 1))])
    if n_classes == 2:
        w = _fit_logistic((Z_train - mu) / sd, y_train.astype(np.float64))
        return float(((A @ w > 0).astype(int) == y_test).mean())
    W = _fit_multinomial((Z_train - mu) / sd, np.asarray(y_train, np.int64), n_classes)
    return float((np.argmax(A @ W, axis=1) == y_test).mean())
