#!/bin/sh
# An agent written in shell. It links no SDK and no generated code: grpcurl
# learns the kernel's contract from server reflection, and the agent sends
# the same Syscall messages a Python agent does. It checks the kernel's
# health, lists the tools, asks the calculator tool for the arithmetic in
# its question, asks the model to phrase the answer, and shows its line of
# the kernel's process table.
#
#   AIOS_KERNEL=127.0.0.1:50051 AIOS_TOKEN=$(aios agent create shell-agent) \
#       examples/shell_agent.sh "What is 17*23+4?"
#
# Needs grpcurl (.venv/bin/grpcurl after `make install`) and jq, or python3
# when jq is missing (SHELL_AGENT_JSON=python3 forces it).
set -eu

KERNEL=${AIOS_KERNEL:-127.0.0.1:50051}
TOKEN=${AIOS_TOKEN:?set AIOS_TOKEN to the agent token (aios agent create NAME)}
QUESTION=${1:-What is 17*23+4?}
HERE=$(cd "$(dirname "$0")" && pwd)
GRPCURL=${GRPCURL:-$(command -v grpcurl || echo "$HERE/../.venv/bin/grpcurl")}
JSON=${SHELL_AGENT_JSON:-$(command -v jq >/dev/null 2>&1 && echo jq || echo python3)}

# get FIELD: read JSON on stdin, print one field (a dotted path, e.g.
# syscall.tool.output), or nothing when it is absent.
get() {
    if [ "$JSON" = jq ]; then
        jq -r --arg path "$1" 'getpath($path | split(".")) // empty'
    else
        python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value.get(key) if isinstance(value, dict) else None
print("" if value is None else value)' "$1"
    fi
}

# quote TEXT: TEXT as a JSON string.
quote() {
    if [ "$JSON" = jq ]; then
        printf '%s' "$1" | jq -Rs .
    else
        python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"
    fi
}

# submit BODY: one syscall through KernelService/Submit; prints the reply, or
# the gRPC status on stderr and fails.
submit() {
    "$GRPCURL" -plaintext -max-time 120 -H "authorization: Bearer $TOKEN" -d "$1" \
        "$KERNEL" aios.kernel.v1.KernelService/Submit
}

request_id() {
    echo "shell-$(date +%s)-$$-$1"
}

echo "kernel $KERNEL: $("$GRPCURL" -plaintext -max-time 10 "$KERNEL" grpc.health.v1.Health/Check | get status)"
"$GRPCURL" -plaintext -max-time 10 "$KERNEL" list | grep -qx aios.kernel.v1.KernelService \
    || { echo "no aios.kernel.v1.KernelService at $KERNEL" >&2; exit 1; }

TOOLS=$("$GRPCURL" -plaintext -max-time 10 -H "authorization: Bearer $TOKEN" -d '{}' \
    "$KERNEL" aios.kernel.v1.KernelService/ListTools)
if [ "$JSON" = jq ]; then
    NAMES=$(printf '%s' "$TOOLS" | jq -r '[.tools[].name] | join(" ")')
else
    NAMES=$(printf '%s' "$TOOLS" | python3 -c 'import json, sys; print(" ".join(t["name"] for t in json.load(sys.stdin)["tools"]))')
fi
echo "tools: $NAMES"

# Act: the arithmetic in the question, by the kernel's calculator tool.
EXPRESSION=$(printf '%s' "$QUESTION" | grep -oE '[0-9(][0-9 ()+*/.%-]*[0-9)]' | head -n 1 || true)
OBSERVATION=""
if [ -n "$EXPRESSION" ]; then
    REPLY=$(submit "{\"syscall\": {\"request_id\": \"$(request_id tool)\", \"tool\": {
        \"name\": \"calculator\", \"arguments\": {\"expression\": $(quote "$EXPRESSION")}}}}")
    RESULT=$(printf '%s' "$REPLY" | get syscall.tool.output)
    echo "tool calculator($EXPRESSION) -> $RESULT"
    OBSERVATION="$EXPRESSION = $RESULT (from the calculator).
"
fi

# Answer: the model phrases it.
PROMPT="${OBSERVATION}Question: $QUESTION
Answer:"
REPLY=$(submit "{\"syscall\": {\"request_id\": \"$(request_id llm)\", \"llm\": {
    \"model\": \"smollm2\", \"max_tokens\": 40, \"temperature\": 0,
    \"messages\": [{\"role\": \"ROLE_USER\", \"content\": $(quote "$PROMPT")}]}}}")
echo "llm: waited $(printf '%s' "$REPLY" | get syscall.waiting), turnaround $(printf '%s' "$REPLY" | get syscall.turnaround)"
ANSWER=$(printf '%s' "$REPLY" | get syscall.llm.text)
if [ -n "$OBSERVATION" ] && ! printf '%s' "$ANSWER" | grep -qF "$RESULT"; then
    ANSWER="$ANSWER ($EXPRESSION = $RESULT)"  # a small model may lose the number
fi
echo "answer: $ANSWER"

ME=$(printf '%s' "$REPLY" | get syscall.agent)
AGENTS=$("$GRPCURL" -plaintext -max-time 10 -H "authorization: Bearer $TOKEN" -d '{}' \
    "$KERNEL" aios.kernel.v1.KernelService/ListAgents)
if [ "$JSON" = jq ]; then
    printf '%s' "$AGENTS" | jq -r --arg me "$ME" '.agents[] | select(.agent == $me)
        | "process table: \(.agent) completed \(.completed // 0), tokens \((.prompt_tokens // 0 | tonumber) + (.completion_tokens // 0 | tonumber))"'
else
    printf '%s' "$AGENTS" | python3 -c 'import json, sys
for a in json.load(sys.stdin).get("agents", []):
    if a["agent"] == sys.argv[1]:
        tokens = int(a.get("prompt_tokens", 0)) + int(a.get("completion_tokens", 0))
        print("process table: %s completed %s, tokens %d" % (a["agent"], a.get("completed", 0), tokens))' "$ME"
fi
