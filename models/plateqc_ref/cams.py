"""Class-activation maps from act_<layer> / grad_<layer> (float64 numpy), as plateqc defines them.

For one sample, A = activation [C,h,w], G = gradient of the chosen pre-softmax logit [C,h,w]:

  gradcam   : w_k = mean_ij G_kij ;                        map = ReLU(sum_k w_k A_k)
  gradcampp : alpha_kij = G^2 / (2 G^2 + sum_ij(A_k) G^3)  (alpha = 0 where the denominator is 0)
              w_k = sum_ij alpha_kij ReLU(G_kij) ;         map = ReLU(sum_k w_k A_k)
  layercam  : map = ReLU(sum_k ReLU(G_kij) A_kij)

All maps are raw (unnormalised) at the layer's resolution.
"""
from __future__ import annotations

import numpy as np


def gradcam(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    w = G.mean(axis=(1, 2))
    return np.maximum(np.tensordot(w, A, axes=(0, 0)), 0.0)


def gradcampp(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    g2 = G * G
    g3 = g2 * G
    s = A.sum(axis=(1, 2), keepdims=True)
    den = 2.0 * g2 + s * g3
    alpha = np.divide(g2, den, out=np.zeros_like(g2), where=den != 0.0)
    w = (alpha * np.maximum(G, 0.0)).sum(axis=(1, 2))
    return np.maximum(np.tensordot(w, A, axes=(0, 0)), 0.0)


def layercam(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    return np.maximum((np.maximum(G, 0.0) * A).sum(axis=0), 0.0)


METHODS = {"gradcam": gradcam, "gradcampp": gradcampp, "layercam": layercam}
