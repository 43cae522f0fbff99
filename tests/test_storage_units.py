"""Storage service units without servers: path safety, page tokens,
passages and text detection."""

from __future__ import annotations

import pytest

from services.runtime import errors
from services.runtime.config import ConfigError
from services.storage import index, paths
from services.storage.config import Config


@pytest.mark.parametrize("raw, normal", [
    ("a.txt", "a.txt"),
    ("docs//notes/./a.txt", "docs/notes/a.txt"),
    ("./x/", "x"),
    ("ünï cödé/ß.txt", "ünï cödé/ß.txt"),
    ("a..b/..c", "a..b/..c"),  # dots inside names are fine
])
def test_paths_are_normalised(raw, normal):
    assert paths.path(raw) == normal


@pytest.mark.parametrize("raw", [
    "", "/", ".", "./", "..", "../x", "a/../b", "a/../../b", "/etc/passwd", "//etc/passwd",
    "a\x00b", "a\nb", "a\x7fb", "a\\..\\b", "x" * 256, ("abcdefgh/" * 120) + "z",
])
def test_unsafe_paths_are_refused_naming_the_field(raw):
    with pytest.raises(errors.InvalidArgument) as exc:
        paths.path(raw, "header.path")
    assert exc.value.field == "header.path"


@pytest.mark.parametrize("raw", ["", "a/b", "..", ".", "x\x00", "a\\b", "n" * 129])
def test_bad_owners_are_refused(raw):
    with pytest.raises(errors.InvalidArgument) as exc:
        paths.owner(raw)
    assert exc.value.field == "owner"


def test_prefix_keeps_a_trailing_slash_and_may_be_empty():
    assert paths.prefix("") == ""
    assert paths.prefix("docs/") == "docs/"
    assert paths.prefix("docs//x") == "docs/x"
    with pytest.raises(errors.InvalidArgument):
        paths.prefix("../")


def test_keys_stay_inside_the_owner_space():
    assert paths.key("agent-a", paths.path("notes/a.txt")) == "agent-a/notes/a.txt"
    assert paths.folders("a/b/c.txt") == ["a/", "a/b/"]
    assert paths.folders("c.txt") == []


def test_page_tokens_round_trip_and_are_tied_to_their_listing():
    token = paths.encode_token("agent\x00docs/\x000", "docs/ß.txt")
    assert paths.decode_token(token, "agent\x00docs/\x000") == "docs/ß.txt"
    for bad, listing in (("%%%", "x"), (token, "agent\x00other/\x000"), (paths.encode_token("x", ""), "x")):
        with pytest.raises(errors.InvalidArgument) as exc:
            paths.decode_token(bad, listing)
        assert exc.value.field == "page_token"


def test_passages_pack_paragraphs_and_split_long_ones():
    text = "First paragraph.\n\nSecond one, short.\n\n" + ("A long sentence about storage. " * 60)
    out = index.passages(text, limit=200)
    assert out[0].startswith("First paragraph.\nSecond one, short.\nA long sentence")
    assert all(len(p) <= 200 for p in out)
    assert "".join(out).count("storage") == 60
    assert index.passages("  \n\n  ") == []


def test_text_detection():
    assert index.text_of(b"hello", "text/plain") == "hello"
    assert index.text_of("häh".encode(), "application/octet-stream") == "häh"
    assert index.text_of(b"{}", "application/json") == "{}"
    assert index.text_of(b"\x89PNG\r\n\x1a\n\x00", "") is None
    assert index.text_of(b"hello", "image/png") is None
    assert index.text_of(b"\xff\xfe", "") is None


def test_config_requires_the_object_store_and_an_index_location():
    base = {"AIOS_STORAGE_S3_ENDPOINT": "127.0.0.1:9000", "AIOS_STORAGE_S3_ACCESS_KEY": "k",
            "AIOS_STORAGE_S3_SECRET_KEY": "s"}
    with pytest.raises(ConfigError, match="S3_ENDPOINT"):
        Config.from_env({"AIOS_STORAGE_QDRANT_PATH": "/tmp/x"})
    with pytest.raises(ConfigError, match="QDRANT"):
        Config.from_env(base)
    config = Config.from_env({**base, "AIOS_STORAGE_INDEX": "false", "AIOS_STORAGE_MAX_VERSIONS": "3"})
    assert (config.max_versions, config.bucket, config.index_enabled) == (3, "aios-files", False)
    with pytest.raises(ConfigError, match="BUCKET"):
        Config.from_env({**base, "AIOS_STORAGE_INDEX": "false", "AIOS_STORAGE_BUCKET": "Bad_Name"})
