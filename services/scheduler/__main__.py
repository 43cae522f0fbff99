from services.runtime.server import run
from services.scheduler.app import build
from services.scheduler.config import Config

run("scheduler", Config.from_env, build)
