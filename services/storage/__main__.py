from services.storage.app import Config, build
from services.runtime.server import run

run("storage", Config.from_env, build)
