"""The published method's reference simulation (three modalities, responses f1, f2, f3).

Three modalities with i.i.d. N(0, 1) entries: ``image`` 3x32x32, ``text`` 10x50 (a sequence of 10
tokens), ``vector`` 32. Each modality is flattened in C order and every 10th element from index 0 is
summed: S = S_img + S_txt + S_vec. Responses (no noise unless ``noise_std`` > 0):

* f1: ``tanh(0.05 S)``
* f2: ``softplus(0.1 S + 1e-4 S_img S_txt)``
* f3: ``16 / (exp(0.02 S) + exp(-0.02 S))``

Train and test samples are drawn independently from one generator (train first).
"""

from __future__ import annotations

import numpy as np

from fdrmfl_pipeline.core.modalities import ModalitySpec, MultimodalData

SYNTHETIC_SPECS = (
    ModalitySpec("image", "image", (3, 32, 32)),
    ModalitySpec("text", "sequence", (10, 50)),
    ModalitySpec("vector", "vector", (32,)),
)
FUNCTIONS = ("f1", "f2", "f3")


def relevant_sum(x: np.ndarray) -> np.ndarray:
    """Sum of every 10th element (from index 0) of each sample flattened in C order."""
    return x.reshape(len(x), -1)[:, ::10].sum(axis=1, dtype=np.float64)


def response(function: str, s_img: np.ndarray, s_txt: np.ndarray, s_vec: np.ndarray) -> np.ndarray:
    """The noiseless response f1/f2/f3 of the three relevant sums."""
    s = s_img + s_txt + s_vec
    if function == "f1":
        return np.tanh(0.05 * s)
    if function == "f2":
        return np.logaddexp(0.0, 0.1 * s + 1e-4 * s_img * s_txt)  # stable softplus
    if function == "f3":
        return 16.0 / (np.exp(0.02 * s) + np.exp(-0.02 * s))
    raise ValueError(f"unknown synthetic function '{function}'; expected one of {FUNCTIONS}")


def generate_synthetic(
    function: str, n_train: int, n_test: int, seed: int, noise_std: float = 0.0
) -> MultimodalData:
    """Draw ``n_train`` + ``n_test`` samples of the reference simulation with a seeded generator."""
    rng = np.random.default_rng(seed)
    parts = []
    for split, n in (("train", n_train), ("test", n_test)):
        arrays = {
            s.name: rng.standard_normal((n, *s.shape), dtype=np.float64).astype(np.float32)
            for s in SYNTHETIC_SPECS
        }
        y = response(
            function,
            relevant_sum(arrays["image"]),
            relevant_sum(arrays["text"]),
            relevant_sum(arrays["vector"]),
        )
        parts.append((split, arrays, y))
    if noise_std > 0:  # drawn after every input, so the inputs do not depend on the noise
        parts = [(sp, arr, y + rng.normal(0.0, noise_std, size=len(y))) for sp, arr, y in parts]
    n_total = n_train + n_test
    width = len(str(max(n_total - 1, 1)))
    return MultimodalData(
        sample_ids=np.array([f"sim_{i:0{width}d}" for i in range(n_total)]),
        target=np.concatenate([p[2] for p in parts]),
        arrays={s.name: np.concatenate([p[1][s.name] for p in parts]) for s in SYNTHETIC_SPECS},
        specs=SYNTHETIC_SPECS,
        split=np.array(["train"] * n_train + ["test"] * n_test),
        source=f"synthetic:{function}",
    )
