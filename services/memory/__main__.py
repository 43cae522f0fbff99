from services.memory.app import Config, build
from services.runtime.server import run

run("memory", Config.from_env, build)
