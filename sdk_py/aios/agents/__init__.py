"""Agents over the AIOS kernel: the Agent base, a ReAct agent that calls
kernel tools, and a runner that loads an agent from a file or folder and
reports its steps. Needs only the SDK (grpcio and protobuf)."""

from aios.agents.base import Agent, Step, StepCallback
from aios.agents.react import Observation, ReActAgent
from aios.agents.runner import AgentLoadError, AgentRun, describe, load_agent, run_agent

__all__ = ["Agent", "AgentLoadError", "AgentRun", "Observation", "ReActAgent", "Step", "StepCallback",
           "describe", "load_agent", "run_agent"]
