"""Serving simulator: an OpenAI-compatible HTTP server that behaves like a
GPU serving engine (vLLM-like continuous batching) under load, without a GPU.

A benchmark tool.  See README.md in this directory for the model and knobs.
"""

from .engine import Engine, EngineConfig, peak_throughput_tokens_per_s
from .server import SimulatorServer, make_app

__all__ = ["Engine", "EngineConfig", "SimulatorServer", "make_app",
           "peak_throughput_tokens_per_s"]
