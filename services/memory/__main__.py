from services.memory.app import build
from services.memory.config import Config
from services.runtime.server import run

run("memory", Config.from_env, build)
