"""`make demo`: start the local stack, run work through the kernel, stop.

Free ports are chosen so the demo never collides with a running `aios up`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.cli.stack import SERVICES, Stack, StackConfig, free_port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aios-demo")
    parser.add_argument("--data", default=".aios")
    args = parser.parse_args(argv)

    from aios.sdk import Client

    ports = {svc: free_port() for svc in SERVICES}
    stack = Stack(StackConfig(data_dir=Path(args.data).resolve() / "demo", ports=ports))
    print("starting the kernel on embedded defaults...", flush=True)
    stack.start(on_ready=lambda name, where: print(f"  {name:<11} {where}", flush=True))
    try:
        with Client(stack.address("scheduler"), token="demo-agent") as client:
            prompt = "In one sentence, what does an operating system do?"
            print(f"\nagent 'demo-agent' asks the kernel: {prompt}", flush=True)
            reply = client.llm.chat(prompt, max_tokens=64, temperature=0)
            print(f"model reply (through the kernel): {reply.text.strip()}")
            print(f"waiting {reply.waiting * 1000:.1f} ms, turnaround {reply.turnaround * 1000:.1f} ms, "
                  f"tokens {reply.prompt_tokens} prompt + {reply.completion_tokens} completion")
    finally:
        stack.stop()
        print("stack stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
