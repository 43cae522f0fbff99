from services.llm_core.app import build
from services.llm_core.config import Config
from services.runtime.server import run

run("llm_core", Config.from_env, build)
