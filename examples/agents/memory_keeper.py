"""An agent that keeps facts in its memory and answers questions from what
it recalls: each statement of the task is stored with memory.add, each
question is looked up with memory.search (by meaning, not words), and the
model answers with the recalled fact in its prompt.

    aios run-agent examples/agents/memory_keeper.py --task \
        "Remember: Bob plays the cello. Remember: Ada's favourite colour is green. Which instrument does Bob play?"
"""

from __future__ import annotations

import re

from aios.agents import Agent


def split_task(task: str) -> tuple[list[str], list[str]]:
    """(facts, questions): sentences ending in '?' are questions; a leading
    'Remember:' is dropped from facts."""
    facts, questions = [], []
    for sentence in re.findall(r"[^.?!]+[.?!]?", task):
        sentence = sentence.strip()
        if not sentence:
            continue
        if sentence.endswith("?"):
            questions.append(sentence)
        else:
            facts.append(re.sub(r"^(remember|note)\s*:\s*", "", sentence, flags=re.IGNORECASE))
    return facts, questions


class MemoryKeeper(Agent):
    name = "memory-keeper"
    description = "Keeps facts in its memory and answers questions from what it recalls."

    async def run(self, task: str) -> str:
        facts, questions = split_task(task)
        for fact in facts:
            await self.kernel.memory.add(fact, tags=["fact"])
        answers = []
        for question in questions:
            hits = await self.kernel.memory.search(question, k=1)
            if not hits:
                answers.append(f"{question} I remember nothing about that.")
                continue
            fact = hits[0].memory.content
            reply = await self.chat(
                f"Fact: {fact}\nQuestion: {question}\nAnswer the question in one short sentence using the fact.",
                max_tokens=40, temperature=0)
            answers.append(f"{reply.text.strip() or fact} (recalled: {fact!r})")
        return " ".join(answers) or f"remembered {len(facts)} facts"
