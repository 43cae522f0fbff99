"""Which of several names a key belongs to, the same in every process that
knows the same names: rendezvous hashing with bounded loads. llm_core maps
an agent run to an endpoint with it, the kernel an agent to a replica.

- Rendezvous, or highest random weight, hashing (Thaler and Ravishankar, "A
  Name-Based Mapping Scheme for Rendezvous", 1996): every endpoint scores the
  key by a hash of (key, endpoint name), and the key's preference order is by
  score. It depends on the names alone, so every replica computes the same
  order whatever order its list is in; when an endpoint goes, only the keys
  it scored highest move (each to its next choice), and one added takes only
  the keys it now scores highest.
- Weighted by capacity (Schindelhauer and Schomaker's logarithmic method,
  "Weighted Distributed Hash Tables", 2005): score = -weight / ln u, u the
  hash mapped into (0, 1), so an endpoint is first for a share of the keys
  in proportion to its weight. With equal weights it is plain rendezvous
  hashing.
- Bounded loads (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing
  with Bounded Loads", SODA 2018): a call goes to the first endpoint in its
  key's order that would hold at most ceil(c * (total + 1) * weight /
  weights) calls with it, `total` being the calls in flight on all of them:
  ceil(c * (total + 1) / n) with equal weights. A hot key spills to its next
  choice rather than swamping its endpoint.

blake2b, never Python's hash(): that one is salted per process, and
replicas must agree.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import TypeVar

# c: an endpoint takes at most 25% more than its share of the calls in
# flight (the paper's 1 + epsilon; Vimeo's bounded-load HAProxy patch and
# liblb use 1.25). Lower spills keys sooner; higher keeps them longer.
LOAD_FACTOR = 1.25

T = TypeVar("T")


def score(key: str, name: str, weight: float = 1.0) -> float:
    """How strongly `name` claims `key`; the highest score wins."""
    digest = hashlib.blake2b(f"{len(key)}:{key}{name}".encode(), digest_size=8).digest()
    # The top 52 bits, + 1, over 2**52 + 1: in (0, 1), both ends left out
    # (ln 0 and ln 1 have no finite score).
    u = ((int.from_bytes(digest, "big") >> 12) + 1) / (2**52 + 1)
    return -weight / math.log(u)


def order(key: str, items: Iterable[T], name: Callable[[T], str],
          weight: Callable[[T], float] = lambda _: 1.0) -> list[T]:
    """`items` in `key`'s preference order, its first choice first."""
    return sorted(items, key=lambda item: (score(key, name(item), weight(item)), name(item)), reverse=True)


def winner(key: str, names: Iterable[str]) -> str:
    """The name that claims `key` (unweighted): the first of its order."""
    return max(names, key=lambda name: (score(key, name), name))


def bound(total: int, weight: float, weights: float, factor: float = LOAD_FACTOR) -> int:
    """The most calls an endpoint of `weight` (of `weights` in all) may hold,
    the next call included, while `total` calls are in flight on them all.
    Fractions: 1.25 * 8 / 2 is exactly 5, never 5.000001 rounded up to 6."""
    return math.ceil(Fraction(factor) * (total + 1) * Fraction(weight) / Fraction(weights))
