"""Tests for services.llm_core.embedder (all-MiniLM-L6-v2 in NumPy)."""

from __future__ import annotations

import json
import math
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.llm_core.embedder import LocalEmbedder, default_model_dir


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


def test_dimension_dtype_and_unit_norm(embedder):
    texts = ["Hello world", "A longer sentence about agents, memory and storage.", ""]
    vecs = embedder.embed(texts)
    assert LocalEmbedder.dimensions == 384
    assert vecs.shape == (3, 384)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_empty_list(embedder):
    out = embedder.embed([])
    assert out.shape == (0, 384)
    assert out.dtype == np.float32


def test_rejects_a_bare_string(embedder):
    with pytest.raises(TypeError):
        embedder.embed("not a list")


def test_matches_published_sentence_transformers_similarities(embedder):
    # sentence-transformers quickstart (sbert.net) with all-MiniLM-L6-v2:
    # model.similarity(...) == [[1, .6660, .1046], [.6660, 1, .1411], [.1046, .1411, 1]]
    vecs = embedder.embed(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    expected = np.array(
        [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]]
    )
    np.testing.assert_allclose(vecs @ vecs.T, expected, atol=2e-4)


def test_paraphrase_ranks_first(embedder):
    query = "A man is eating food."
    corpus = [
        "A man is riding a horse.",
        "The new movie is awesome.",
        "A man is eating a piece of bread.",
        "Two men pushed carts through the woods.",
        "A monkey is playing drums.",
        "The stock market fell sharply on Monday.",
    ]
    q = embedder.embed([query])[0]
    sims = embedder.embed(corpus) @ q
    assert int(np.argmax(sims)) == 2
    assert sims[2] > 0.7
    assert sims[2] - sims[0] > 0.3  # "riding a horse" is much less similar
    assert sorted(sims)[-2] < 0.5


def test_batch_equals_one_by_one(embedder):
    texts = [
        "Short.",
        "A considerably longer sentence, so that the others in its batch get padded a lot.",
        "Medium length sentence here.",
        "Ünïcödé and ACCENTS are lower-cased and stripped.",
        "",
    ] * 8  # 40 texts: more than one internal batch of 32
    batch = embedder.embed(texts)
    single = np.stack([embedder.embed([t])[0] for t in texts])
    # Not bit-exact: BLAS kernels round differently by row position and thread
    # count (~1e-7 on these unit vectors). Padding leaking into the pooled
    # vector, or rows landing in the wrong slot, moves values by 1e-2 or more.
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-5)
    # The same text gives the same vector wherever it sits: in any row, either
    # side of the internal batch boundary (rows 32..39 are a second batch).
    for group in range(1, 8):
        np.testing.assert_allclose(batch[5 * group:5 * group + 5], batch[:5], rtol=0, atol=1e-6,
                                   err_msg=f"rows {5 * group}..{5 * group + 4}")


def test_truncates_at_256_tokens(embedder):
    long_text = " ".join(f"word{i % 50}" for i in range(400))
    ids = embedder._tokenizer.encode(long_text).ids
    assert len(ids) == 256 and ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
    a, b = embedder.embed([long_text, long_text + " completely different tail words"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_concurrent_callers_get_the_same_vectors(embedder):
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(20)]
    expected = embedder.embed(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: embedder.embed(texts), range(12)))
    for r in results:
        np.testing.assert_allclose(r, expected, atol=1e-6)


def test_loading_and_embedding_never_touch_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    emb = LocalEmbedder(model_dir=default_model_dir())
    assert emb.embed(["offline works"]).shape == (1, 384)


def _reference_float64(model_dir, text: str) -> np.ndarray:
    """Plain float64 BERT + mean pooling + normalise, written straight from the
    HF BertModel definition, to check the optimised float32 code path."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=256)
    ids = np.array(tok.encode(text).ids)
    w = {k: v.astype(np.float64) for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    erf = np.vectorize(math.erf)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg["layer_norm_eps"]) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    n, nh = len(ids), cfg["num_attention_heads"]
    hd = cfg["hidden_size"] // nh
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = ln(x, "embeddings.LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (
            lin(x, p + f"attention.self.{m}").reshape(n, nh, hd).transpose(1, 0, 2)
            for m in ("query", "key", "value")
        )
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, -1)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        inter = lin(x, p + "intermediate.dense")
        inter = 0.5 * inter * (1.0 + erf(inter / math.sqrt(2.0)))
        x = ln(lin(inter, p + "output.dense") + x, p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def test_float32_path_matches_a_float64_reference(embedder):
    texts = ["A man is eating food.", "Storage for agents: versioned objects in S3."]
    got = embedder.embed(texts)
    for text, vec in zip(texts, got):
        ref = _reference_float64(embedder.model_dir, text)
        np.testing.assert_allclose(vec, ref, atol=1e-5)
