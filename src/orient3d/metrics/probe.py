"""Linear-probe accuracy: how well a linear map reads the class from the latent.

A seeded held-out split; the features are standardized with the training
statistics; a multinomial logistic regression with a small L2 penalty is fit by
full-batch L-BFGS (scipy, analytic gradient; no sklearn). With views
``(N, V, Z)`` the split is by object, so no object's views are on both sides.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orient3d.metrics._common import ArrayLike, to_numpy

__all__ = ["fit_logistic", "linear_probe"]


def fit_logistic(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-3, max_iter: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(Z, K)`` and bias ``(K,)`` of an L2-penalized softmax regression.

    Minimizes ``mean cross-entropy + l2·‖W‖²`` with scipy's L-BFGS-B and the
    analytic gradient (numpy; no torch optimizer, whose first use is slow).
    """
    n, zdim = x.shape
    onehot = np.eye(n_classes)[y]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: zdim * n_classes].reshape(zdim, n_classes)
        logits = x @ w + theta[zdim * n_classes :]
        logits -= logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits).sum(axis=1))
        loss = float((lse - (logits * onehot).sum(axis=1)).mean() + l2 * (w * w).sum())
        d = (np.exp(logits - lse[:, None]) - onehot) / n  # (N, K)
        grad = np.concatenate([(x.T @ d + 2.0 * l2 * w).ravel(), d.sum(axis=0)])
        return loss, grad

    from scipy import optimize as _opt  # (here: a second to import, rarely needed)

    theta0 = np.zeros((zdim + 1) * n_classes)
    res = _opt.minimize(
        loss_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter}
    )
    theta = res.x
    return theta[: zdim * n_classes].reshape(zdim, n_classes), theta[zdim * n_classes :]


def linear_probe(
    latents: ArrayLike,
    labels: ArrayLike,
    test_fraction: float = 0.3,
    seed: int = 0,
    l2: float = 1e-3,
) -> dict[str, Any]:
    """Train/test accuracy of a linear classifier of ``labels`` from ``latents``.

    Args:
        latents: ``(N, Z)``, or ``(N, V, Z)`` for ``V`` views per object.
        labels: ``(N,)`` class labels (any hashable values).
        test_fraction: share of objects held out (at least one each side).
        seed: seeds the split.
        l2: the L2 penalty on the weights.

    Returns:
        ``train_accuracy``, ``test_accuracy``, ``chance`` (the test accuracy of
        always predicting the most common training class), ``n_classes``,
        ``n_train``, ``n_test`` (objects).
    """
    z = to_numpy(latents, dtype=np.float64)
    lab = to_numpy(labels).reshape(-1)
    if z.ndim == 2:
        z = z[:, None, :]
    if z.ndim != 3 or z.shape[0] != lab.shape[0] or z.shape[0] < 2:
        raise ValueError(f"latents (N, [V,] Z) and labels (N,) mismatch: {z.shape}, {lab.shape}")
    classes, y_all = np.unique(lab, return_inverse=True)
    n, v, _ = z.shape
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    test, train = perm[:n_test], perm[n_test:]

    def flat(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return z[idx].reshape(-1, z.shape[2]), np.repeat(y_all[idx], v)

    x_tr, y_tr = flat(train)
    x_te, y_te = flat(test)
    mu, sd = x_tr.mean(0), np.maximum(x_tr.std(0), 1e-8)
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    w, b = fit_logistic(x_tr, y_tr, len(classes), l2=l2)
    majority = int(np.bincount(y_tr, minlength=len(classes)).argmax())
    return {
        "train_accuracy": float(((x_tr @ w + b).argmax(1) == y_tr).mean()),
        "test_accuracy": float(((x_te @ w + b).argmax(1) == y_te).mean()),
        "chance": float((y_te == majority).mean()),
        "n_classes": len(classes),
        "n_train": len(train),
        "n_test": len(test),
    }
