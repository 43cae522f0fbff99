"""Endpoint prices: the "prices" object of AIOS_LLM_ENDPOINTS, validated at
start, and reported by ListModels of a real llm_core over the simulator."""

from __future__ import annotations

import json

import pytest

from aios.llm.v1 import llm_service_pb2 as pb
from services.llm_core.config import Config, Prices
from services.runtime.config import ConfigError
from tests.test_llm_core_routing import FAST, MODEL, endpoint, llm_core, simulators


def config_with(*entries: dict) -> Config:
    return Config.from_env({"AIOS_LLM_ENDPOINTS": json.dumps(list(entries))})


def priced(prices, name: str = "p") -> dict:
    return {"name": name, "model": "m", "base_url": "http://127.0.0.1:9/v1", "prices": prices}


def test_prices_parse_with_and_without_cached_prompt():
    config = config_with({"name": "none", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
                         priced({"prompt": 0.15, "completion": 0.6}, "plain"),
                         priced({"prompt": 3, "completion": 15, "cached_prompt": 0.3}, "cached"),
                         priced({"prompt": 0, "completion": 0}, "free"))
    none, plain, cached, free = config.endpoints
    assert none.prices is None
    assert plain.prices == Prices(prompt=0.15, completion=0.6, cached_prompt=None)
    assert cached.prices == Prices(prompt=3.0, completion=15.0, cached_prompt=0.3)
    assert isinstance(cached.prices.prompt, float)
    assert free.prices == Prices(prompt=0.0, completion=0.0)


@pytest.mark.parametrize("prices, message", [
    ([1, 2], "AIOS_LLM_ENDPOINTS[1].prices must be an object"),
    (None, "AIOS_LLM_ENDPOINTS[1].prices must be an object"),
    ({"prompt": 1, "completion": 2, "output": 3}, "AIOS_LLM_ENDPOINTS[1].prices has unknown keys: ['output']"),
    ({"completion": 2}, "AIOS_LLM_ENDPOINTS[1].prices.prompt is required"),
    ({"prompt": 1}, "AIOS_LLM_ENDPOINTS[1].prices.completion is required"),
    ({"prompt": -0.01, "completion": 2}, "AIOS_LLM_ENDPOINTS[1].prices.prompt must be a non-negative number"),
    ({"prompt": 1, "completion": "2"}, "AIOS_LLM_ENDPOINTS[1].prices.completion must be a non-negative number"),
    ({"prompt": 1, "completion": True}, "AIOS_LLM_ENDPOINTS[1].prices.completion must be a non-negative number"),
    ({"prompt": 1, "completion": 2, "cached_prompt": None},
     "AIOS_LLM_ENDPOINTS[1].prices.cached_prompt must be a non-negative number"),
    ({"prompt": 1, "completion": 2, "cached_prompt": -1},
     "AIOS_LLM_ENDPOINTS[1].prices.cached_prompt must be a non-negative number"),
])
def test_bad_prices_fail_at_start_naming_the_key(prices, message):
    with pytest.raises(ConfigError) as exc:
        config_with(priced({"prompt": 1, "completion": 1}, "good"), priced(prices, "bad"))
    assert str(exc.value).startswith(message), str(exc.value)


def test_non_finite_prices_are_refused():
    # json.loads accepts NaN and Infinity; a price must be a real number.
    raw = ('[{"name": "p", "model": "m", "base_url": "http://127.0.0.1:9/v1", '
           '"prices": {"prompt": NaN, "completion": Infinity}}]')
    with pytest.raises(ConfigError, match=r"AIOS_LLM_ENDPOINTS\[0\]\.prices\.prompt must be"):
        Config.from_env({"AIOS_LLM_ENDPOINTS": raw})


async def test_list_models_reports_each_endpoints_prices():
    async with simulators(FAST, FAST) as (a, b), llm_core([
        endpoint(a, "a", prices={"prompt": 0.5, "completion": 1.5, "cached_prompt": 0.05}),
        endpoint(b, "b", prices={"prompt": 0.25, "completion": 0.75}),
        endpoint(b, "unpriced"),
        {"name": "emb", "model": "sim-embed", "kind": "embedding", "base_url": b.url,
         "prices": {"prompt": 0.02, "completion": 0}},
    ]) as stub:
        models = {m.name: m for m in (await stub.ListModels(pb.ListModelsRequest(), timeout=30)).models}
    eps = {ep.name: ep for m in models.values() for ep in m.endpoints}
    assert {ep.name for ep in models[MODEL].endpoints} == {"a", "b", "unpriced"}
    assert models["sim-embed"].kind == pb.MODEL_KIND_EMBEDDING

    a_prices = eps["a"].prices
    assert (a_prices.prompt, a_prices.completion) == (0.5, 1.5)
    assert a_prices.HasField("cached_prompt") and a_prices.cached_prompt == 0.05
    b_prices = eps["b"].prices
    assert (b_prices.prompt, b_prices.completion) == (0.25, 0.75)
    assert not b_prices.HasField("cached_prompt")  # not configured: costs what prompt does
    assert eps["b"].HasField("prices") and not eps["unpriced"].HasField("prices")
    assert (eps["emb"].prices.prompt, eps["emb"].prices.completion) == (0.02, 0.0)
