"""The memory service's plain modules: filter syntax, LRU-K, configuration."""

from __future__ import annotations

import pytest

from services.memory import working
from services.memory.config import Config
from services.memory.records import Filter, parse_filter
from services.runtime import errors
from services.runtime.config import ConfigError


@pytest.mark.parametrize("text, expected", [
    ("", Filter()),
    ("   ", Filter()),
    ("tag:work", Filter(tags=("work",))),
    ('tag:"two words"', Filter(tags=("two words",))),
    ('metadata.kind="note"', Filter(metadata=(("kind", "note"),))),
    ("metadata.kind=note", Filter(metadata=(("kind", "note"),))),
    ('metadata.kind = "a \\"quoted\\" AND value"', Filter(metadata=(("kind", 'a "quoted" AND value'),))),
    ('tag:a AND metadata.k-1="v" AND tag:b', Filter(tags=("a", "b"), metadata=(("k-1", "v"),))),
])
def test_filter_parses(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize("text", [
    "tag:a OR tag:b", "tag:a AND", "tag:a tag:b", "kind=note", "metadata.=x", 'metadata.k="open',
    "tag:", "AND tag:a", "metadata.a.b=c",
])
def test_bad_filter_names_the_field(text):
    with pytest.raises(errors.InvalidArgument) as exc:
        parse_filter(text)
    assert exc.value.field == "filter" and exc.value.reason == "BAD_FILTER"


def test_record_access_keeps_the_last_k():
    h = []
    for t in (1.0, 2.0, 3.0):
        h = working.record_access(h, t, 2)
    assert h == [2.0, 3.0]


def test_lru_k_evicts_records_with_fewer_than_k_accesses_first():
    # b was used twice, long ago; a and c once, recently: LRU-K keeps b.
    histories = {"a": [10.0], "b": [1.0, 2.0], "c": [11.0]}
    assert working.choose_victims(histories, set(), 2, 2) == ["a"]
    # With K=1 it is plain LRU: b's last access is the oldest.
    assert working.choose_victims({"a": [10.0], "b": [2.0], "c": [11.0]}, set(), 2, 1) == ["b"]


def test_lru_k_orders_by_kth_most_recent_access():
    histories = {"a": [5.0, 100.0], "b": [6.0, 7.0], "c": [8.0, 9.0]}
    # a was used most recently, but its 2nd most recent access is the oldest.
    assert working.choose_victims(histories, set(), 1, 2) == ["a", "b"]


def test_records_in_use_go_last():
    histories = {"old": [1.0, 2.0], "new": [50.0]}
    assert working.choose_victims(histories, {"new"}, 1, 2) == ["old"]
    # When the call itself uses more than the limit, its oldest go too.
    assert working.choose_victims({"x": [1.0], "y": [2.0], "z": [3.0]}, {"x", "y", "z"}, 2, 2) == ["x"]


def test_nothing_to_evict_under_the_limit():
    assert working.choose_victims({"a": [1.0]}, set(), 1, 2) == []


def test_clock_is_strictly_increasing():
    clock = working.Clock()
    times = [clock.now() for _ in range(1000)]
    assert all(b > a for a, b in zip(times, times[1:]))


def test_config_defaults_and_overrides():
    cfg = Config.from_env({"AIOS_DATA_DIR": "/data"})
    assert cfg.qdrant_path == "/data/memory-qdrant" and not cfg.qdrant_url
    assert (cfg.working_limit, cfg.lru_k, cfg.max_content_bytes, cfg.port) == (64, 2, 65536, 50053)
    cfg = Config.from_env({"AIOS_MEMORY_QDRANT_PATH": "/q", "AIOS_MEMORY_WORKING_LIMIT": "8",
                           "AIOS_MEMORY_LRU_K": "3", "AIOS_LLM_ADDR": "127.0.0.1:9"})
    assert (cfg.qdrant_path, cfg.working_limit, cfg.lru_k, cfg.llm_addr) == ("/q", 8, 3, "127.0.0.1:9")


@pytest.mark.parametrize("env, name", [
    ({"AIOS_MEMORY_WORKING_LIMIT": "0"}, "AIOS_MEMORY_WORKING_LIMIT"),
    ({"AIOS_MEMORY_LRU_K": "two"}, "AIOS_MEMORY_LRU_K"),
    ({"AIOS_MEMORY_QDRANT_URL": "qdrant:6333"}, "AIOS_MEMORY_QDRANT_URL"),
])
def test_config_errors_name_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        Config.from_env(env)
