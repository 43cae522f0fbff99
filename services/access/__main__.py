from services.access.app import build
from services.access.config import Config
from services.runtime.server import run

run("access", Config.from_env, build)
