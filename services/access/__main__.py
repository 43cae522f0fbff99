from services.access.app import Config, build
from services.runtime.server import run

run("access", Config.from_env, build)
