"""One project seed, many independent streams: ``rng(seed, "partition")``, ``rng(seed, "round", 3)``."""

from __future__ import annotations

import zlib

import numpy as np


def stream_key(seed: int, *keys: int | str) -> list[int]:
    """A stable integer sequence for ``numpy``'s SeedSequence from a seed and labels."""
    out = [int(seed) & 0xFFFFFFFF]
    for k in keys:
        out.append(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & 0xFFFFFFFF)
    return out


def rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator for the stream named by ``keys`` under the project ``seed``."""
    return np.random.default_rng(stream_key(seed, *keys))


def derived_seed(seed: int, *keys: int | str) -> int:
    """A 31-bit integer seed for the stream named by ``keys`` (for torch/sklearn/optuna)."""
    return int(np.random.SeedSequence(stream_key(seed, *keys)).generate_state(1)[0] & 0x7FFFFFFF)


def deterministic_torch(threads: int) -> None:
    """Fixed torch threads and deterministic kernels: bit-identical results for a seed.

    ``torch.use_deterministic_algorithms`` also sets a flag of the torch compiler, importing it
    (about 2.5 s per process; every Flower deployment message is a fresh process). Nothing here
    compiles, so the kernel switch alone is set while the compiler is not loaded."""
    import sys

    import torch

    torch.set_num_threads(threads)
    switch = getattr(torch._C, "_set_deterministic_algorithms", None)
    if "torch._inductor.config" in sys.modules or switch is None:
        torch.use_deterministic_algorithms(True)
    else:
        switch(True, warn_only=False)
