"""Secure aggregation by pairwise masking: the server learns the sum of the clients' answers and
nothing about any single one (semi-honest server; Bonawitz et al., CCS 2017, without the secret
sharing: a client that drops during unmasking restarts the release instead).

One *release* (one sum the server asks for) takes three messages per client:

1. **keys**: each client makes a fresh X25519 key pair and a fresh 32-byte self-mask seed, and
   sends its public key (:meth:`MaskingClient.public_key`).
2. **masked answer**: the server sends every public key; each client turns its answer into
   fixed-point integers modulo 2**128 and adds its self mask and, for every other client j, the
   pairwise mask ``+PRG(s_ij)`` (j above it) or ``-PRG(s_ij)`` (j below it), where ``s_ij`` is
   their Diffie-Hellman secret (:meth:`MaskingClient.masked`). Pairwise masks cancel in the sum;
   every single masked answer is uniformly random to the server.
3. **unmask**: the server names the clients whose answers arrived (the survivors) and those that
   did not; each survivor reveals its own self-mask seed and its pairwise secrets with the
   dropped clients only (:meth:`MaskingClient.reveal`). The server removes those masks
   (:func:`unmask`). A late answer of a dropped client stays hidden: its self mask is never
   revealed. A survivor that does not answer step 3 makes the release fail
   (:class:`ReleaseFailed`); the caller retries with fresh keys without it.

A client refuses to unmask a sum of fewer than two answers, and refuses a second unmasking of
the same release. Fixed point: 40 fractional bits, 128-bit ring, values up to 2**71 in
magnitude, so floats round to the nearest 2**-40 (below 2**13 in magnitude; larger values are
exact) and the sum of up to 65 536 answers does not depend on the order or on the masks. Cryptography: X25519, HKDF-SHA256
and the ChaCha20 keystream from the ``cryptography`` package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

FRAC_BITS = 40
RING_BITS = 128
MOD = 1 << RING_BITS
MAX_ABS = float(2 ** (RING_BITS - FRAC_BITS - 1 - 16))  # sums of up to 2**16 answers stay in range
MIN_SURVIVORS = 2


class SecAggError(RuntimeError):
    """A secure-aggregation step was refused or cannot complete."""


class ReleaseFailed(SecAggError):
    """Survivors did not unmask: the release must be repeated without them."""


# ---- fixed point -------------------------------------------------------------------------------


def quantize(x: np.ndarray, what: str = "value") -> np.ndarray:
    """Float array -> object array of Python ints modulo 2**128 (two's complement)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise SecAggError(f"secure aggregation: {what} holds NaN or inf values")
    if x.size and float(np.max(np.abs(x))) >= MAX_ABS:
        raise SecAggError(
            f"secure aggregation: {what} has a value of magnitude {float(np.max(np.abs(x))):.3g}, "
            f"above the fixed-point range {MAX_ABS:.3g}"
        )
    scaled = np.rint(x * float(1 << FRAC_BITS))
    return np.array([int(v) % MOD for v in scaled.tolist()], dtype=object)


def dequantize(v: np.ndarray) -> np.ndarray:
    """Object array of ints modulo 2**128 -> float64 (signed, 40 fractional bits)."""
    half = MOD >> 1
    return np.array(
        [((int(a) - MOD) if int(a) >= half else int(a)) / (1 << FRAC_BITS) for a in v],
        dtype=np.float64,
    )


def _prg(key: bytes, n: int) -> np.ndarray:
    """``n`` pseudo-random ints modulo 2**128 from a 32-byte key (ChaCha20 keystream)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    enc = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor()
    raw = np.frombuffer(enc.update(b"\0" * (16 * n)), dtype="<u8").reshape(n, 2)
    lo = raw[:, 0].astype(object)
    hi = raw[:, 1].astype(object)
    return (hi * (1 << 64) + lo) % MOD


def _kdf(secret: bytes, label: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(secret)


def _pair_label(release: str, a: int, b: int) -> str:
    lo, hi = sorted((a, b))
    return f"fdrmfl-secagg|pair|{release}|{lo}|{hi}"


def _self_label(release: str, client: int) -> str:
    return f"fdrmfl-secagg|self|{release}|{client}"


def _new_private_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


# ---- client ------------------------------------------------------------------------------------


@dataclass
class MaskingClient:
    """One client's side of one release. ``secret`` and ``self_seed`` never leave the client
    except as :meth:`reveal` allows; :meth:`to_bytes` / :meth:`from_bytes` keep them in the
    client's own state between messages."""

    client_id: int
    release: str
    secret: bytes = field(default_factory=_new_private_key)
    self_seed: bytes = field(default_factory=lambda: os.urandom(32))
    peers: dict[int, bytes] = field(default_factory=dict)  # client id -> public key (step 2)
    revealed: bool = False

    def public_key(self) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        return X25519PrivateKey.from_private_bytes(self.secret).public_key().public_bytes_raw()

    def _pair_key(self, other: int) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.x25519 import (
            X25519PrivateKey,
            X25519PublicKey,
        )

        shared = X25519PrivateKey.from_private_bytes(self.secret).exchange(
            X25519PublicKey.from_public_bytes(self.peers[other])
        )
        return _kdf(shared, _pair_label(self.release, self.client_id, other))

    def masked(self, values: np.ndarray, peers: dict[int, bytes]) -> np.ndarray:
        """The answer, fixed point, plus the self mask and the pairwise masks with ``peers``
        (every client of the release, this one included)."""
        if self.client_id not in peers or peers[self.client_id] != self.public_key():
            raise SecAggError(
                f"secure aggregation: client {self.client_id} is not among the release's keys"
            )
        if len(set(peers.values())) != len(peers):
            raise SecAggError("secure aggregation: two clients announced the same public key")
        self.peers = dict(peers)
        q = quantize(values, f"client {self.client_id}'s answer")
        out = (
            q + _prg(_kdf(self.self_seed, _self_label(self.release, self.client_id)), q.size)
        ) % MOD
        for j in sorted(peers):
            if j == self.client_id:
                continue
            mask = _prg(self._pair_key(j), q.size)
            out = (out + mask) % MOD if j > self.client_id else (out - mask) % MOD
        return out

    def reveal(self, survivors: list[int], dropped: list[int]) -> dict:
        """What the server needs to unmask the sum of ``survivors``: this client's self-mask
        seed and its pairwise keys with ``dropped``. Refused for a sum of fewer than two
        answers, for a client outside ``survivors``, for names that are not the release's
        clients, and a second time."""
        s, d = set(survivors), set(dropped)
        if self.revealed:
            raise SecAggError(f"secure aggregation: release {self.release} was already unmasked")
        if self.client_id not in s or s & d or (s | d) != set(self.peers):
            raise SecAggError(
                f"secure aggregation: client {self.client_id} refuses to unmask: survivors "
                f"{sorted(s)} and dropped {sorted(d)} do not split the release's clients "
                f"{sorted(self.peers)}"
            )
        if len(s) < MIN_SURVIVORS:
            raise SecAggError(
                f"secure aggregation: client {self.client_id} refuses to unmask a sum of "
                f"{len(s)} answer(s): the server would learn a single client's value"
            )
        self.revealed = True
        return {
            "self": _kdf(self.self_seed, _self_label(self.release, self.client_id)),
            "pairs": {j: self._pair_key(j) for j in sorted(d)},
        }

    def to_bytes(self) -> bytes:
        import json

        return json.dumps(
            {
                "client_id": self.client_id,
                "release": self.release,
                "secret": self.secret.hex(),
                "self_seed": self.self_seed.hex(),
                "peers": {str(k): v.hex() for k, v in self.peers.items()},
                "revealed": self.revealed,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> MaskingClient:
        import json

        d = json.loads(raw.decode())
        return cls(
            int(d["client_id"]),
            d["release"],
            bytes.fromhex(d["secret"]),
            bytes.fromhex(d["self_seed"]),
            {int(k): bytes.fromhex(v) for k, v in d["peers"].items()},
            bool(d["revealed"]),
        )


# ---- server ------------------------------------------------------------------------------------


def unmask(
    masked: dict[int, np.ndarray], reveals: dict[int, dict], clients: list[int]
) -> np.ndarray:
    """The float sum of the survivors' answers: ``masked`` (survivor -> masked answer) summed,
    minus each survivor's self mask and its pairwise masks with the dropped clients (the
    release's ``clients`` that are not survivors)."""
    survivors = sorted(masked)
    if len(survivors) < MIN_SURVIVORS:
        raise SecAggError(
            f"secure aggregation needs at least {MIN_SURVIVORS} answers, got {len(survivors)}"
        )
    missing = [c for c in survivors if c not in reveals]
    if missing:
        raise ReleaseFailed(f"secure aggregation: clients {missing} did not unmask")
    dropped = [c for c in clients if c not in masked]
    n = next(iter(masked.values())).size
    total = np.array([0] * n, dtype=object)
    for c in survivors:
        total = (total + masked[c]) % MOD
    for c in survivors:
        total = (total - _prg(reveals[c]["self"], n)) % MOD
        for j in dropped:
            mask = _prg(reveals[c]["pairs"][j], n)
            # client c added +mask for j above it, -mask below: remove what it added
            total = (total - mask) % MOD if j > c else (total + mask) % MOD
    return dequantize(total)


def plain_sum(answers: dict[int, np.ndarray]) -> np.ndarray:
    """The same fixed-point sum without masks (what :func:`unmask` returns for these answers):
    engines that hold every client in one process use it so their numbers equal a masked run's."""
    clients = sorted(answers)
    n = np.asarray(answers[clients[0]]).size
    total = np.array([0] * n, dtype=object)
    for c in clients:
        total = (total + quantize(answers[c], f"client {c}'s answer")) % MOD
    return dequantize(total)


# ---- layout: named arrays <-> one vector -------------------------------------------------------


def flatten(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, list[tuple[str, tuple]]]:
    """Named float arrays -> one float64 vector and the (name, shape) layout, names sorted."""
    names = sorted(arrays)
    layout = [(k, tuple(np.shape(arrays[k]))) for k in names]
    vec = (
        np.concatenate([np.asarray(arrays[k], dtype=np.float64).ravel() for k in names])
        if names
        else np.zeros(0)
    )
    return vec, layout


def unflatten(vec: np.ndarray, layout: list[tuple[str, tuple]]) -> dict[str, np.ndarray]:
    sizes = [int(np.prod(shape)) if shape else 1 for _, shape in layout]
    if sum(sizes) != len(vec):
        raise SecAggError(f"secure aggregation: a sum of {len(vec)} values does not fit {layout}")
    out, start = {}, 0
    for (name, shape), size in zip(layout, sizes, strict=True):
        out[name] = np.asarray(vec[start : start + size]).reshape(shape)
        start += size
    return out


def plain_sum_arrays(answers: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """:func:`plain_sum` of named arrays (every client's with the same names and shapes)."""
    parts = {c: flatten(answers[c]) for c in sorted(answers)}
    layout = next(iter(parts.values()))[1]
    return unflatten(plain_sum({c: v for c, (v, _) in parts.items()}), layout)
