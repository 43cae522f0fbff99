"""Where each prompt prefix is cached: an approximate view of every
endpoint's prefix cache, kept from what llm_core sent it.

An engine with prefix caching (vLLM's automatic prefix caching, SGLang's
radix cache, llama.cpp's slots) computes again only the part of a prompt it
has not seen; where a call lands decides how much that is. llm_core cannot
see inside the engines, so it remembers what it sent them:

- A prompt is cut into blocks of BLOCK_CHARS characters (about 16 tokens, the
  engines' own block size) and each block is named by a hash chained over
  every block before it, so equal hashes mean equal prefixes: a radix tree
  flattened into one set per endpoint, as vLLM indexes its own blocks.
- An endpoint's set is an LRU bounded by the tokens its cache holds (the
  endpoint's `cache_tokens`), so what the engine evicted first ages out of the
  view first. Blocks enter when a call is routed (later calls with the same
  prefix see it at once, as in SGLang's router) and again with the answer
  when it ends (the next turn of a conversation starts with it).

Where an engine tells what it holds (vLLM's KV-cache events, llama.cpp's
/slots), an adapter can insert and evict blocks on its word instead; the
router reads only `match`, `insert` and `evict` (docs/routing.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

# Characters per block: 16 tokens at about 4 characters each, the block size
# of vLLM and of most engines' caches.
BLOCK_CHARS = 64
CHARS_PER_TOKEN = 4


def prompt_text(messages: Sequence[dict[str, Any]]) -> str:
    """The conversation as one string, in order: what a chat template lays
    out, up to the template's own markers (the same on every endpoint of a
    model, so they cancel out of any comparison)."""
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"{m.get('role', '')}\n{content or ''}\n")
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            parts.append(f"{fn.get('name', '')}({fn.get('arguments', '')})\n")
    return "".join(parts)


def block_hashes(text: str, known: Sequence[int] = ()) -> list[int]:
    """Chained hashes of the full blocks of `text` (a partial last block is
    left out: engines cache whole blocks). `known` are those of a prefix of
    `text` already hashed, which are not computed again."""
    out = list(known)
    h = out[-1] if out else 0
    for i in range(len(out), len(text) // BLOCK_CHARS):
        h = hash((h, text[i * BLOCK_CHARS:(i + 1) * BLOCK_CHARS]))
        out.append(h)
    return out


def blocks_for_tokens(tokens: int) -> int:
    return max(1, tokens * CHARS_PER_TOKEN // BLOCK_CHARS)


class PrefixIndex:
    """The blocks one endpoint is believed to hold, least recently used first."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = blocks_for_tokens(capacity_tokens)
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of a prompt the endpoint holds."""
        blocks = self._blocks
        n = 0
        for h in hashes:
            if h not in blocks:
                break
            n += 1
        return n

    def insert(self, hashes: Iterable[int]) -> None:
        blocks = self._blocks
        for h in hashes:
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)

    def evict(self, hashes: Iterable[int]) -> None:
        for h in hashes:
            self._blocks.pop(h, None)

    def fill(self) -> float:
        """Fraction of the cache the view believes is in use."""
        return len(self._blocks) / self.capacity
