"""An agent that writes a note, finds it again by meaning, revises it (the
store keeps every version) and lists the versions.

    aios run-agent examples/agents/note_taker.py --task "how the kernel schedules LLM calls"
"""

from __future__ import annotations

import re

from aios.agents import Agent


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "note"


class NoteTaker(Agent):
    name = "note-taker"
    description = "Writes a note, searches its files, revises the note and lists its versions."

    async def run(self, task: str) -> str:
        path = f"notes/{slug(task)}.md"
        draft = await self.chat(f"Write two short sentences about {task}.", max_tokens=40, temperature=0)
        first = f"# {task}\n\n{draft.text.strip()}\n"
        v1 = await self.kernel.files.write(path, first)
        hits = await self.kernel.files.search(task, k=3)
        found = hits[0].path if hits else "nothing"
        more = await self.chat(f"Here is a note:\n{draft.text.strip()}\nWrite one more sentence for it.",
                               max_tokens=32, temperature=0)
        # Revise only the version we wrote: a concurrent change fails the write.
        v2 = await self.kernel.files.write(path, f"{first}\n{more.text.strip()}\n", if_version_id=v1.version_id)
        versions = await self.kernel.files.versions(path)
        old = await self.kernel.files.read(path, version_id=v1.version_id)
        kept = "kept" if old == first.encode() else "CHANGED"
        return (f"{path}: {len(versions)} versions (latest {v2.version_id[:10]}, first one {kept}); "
                f"search for the topic found {found}")
