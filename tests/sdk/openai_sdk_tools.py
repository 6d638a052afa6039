"""Tool calls through Switchyard with the official OpenAI Python SDK, plain and streamed.

Usage: python3 openai_sdk_tools.py BASE_URL MODEL
Expects the model to call `get_weather` (the test's mock upstream does). Prints a JSON summary and
exits 0, or prints the reason to stderr and exits 1.
"""
import json
import sys

from openai import OpenAI

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}]


def fail(reason):
    print(reason, file=sys.stderr)
    sys.exit(1)


def main():
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key="sk-client-test", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "What is the weather in San Francisco?"}]

    completion = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    choice = completion.choices[0]
    calls = choice.message.tool_calls or []
    if not calls or calls[0].function.name != "get_weather":
        fail(f"no get_weather tool call: {completion!r}")
    args = json.loads(calls[0].function.arguments)
    if choice.finish_reason != "tool_calls":
        fail(f"finish_reason {choice.finish_reason!r}, expected tool_calls")
    if completion.usage is None or completion.usage.total_tokens <= 0:
        fail("no usage")

    # Streamed: accumulate the tool-call fragments the way the SDK docs show.
    stream = client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True}
    )
    streamed = {}
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            for call in c.delta.tool_calls or []:
                entry = streamed.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                if call.id:
                    entry["id"] = call.id
                if call.function and call.function.name:
                    entry["name"] += call.function.name
                if call.function and call.function.arguments:
                    entry["arguments"] += call.function.arguments
            if c.finish_reason:
                finish = c.finish_reason
    if not streamed or streamed[0]["name"] != "get_weather" or not streamed[0]["id"]:
        fail(f"streamed tool calls wrong: {streamed!r}")
    stream_args = json.loads(streamed[0]["arguments"])
    if finish != "tool_calls":
        fail(f"streamed finish_reason {finish!r}")
    if usage is None or usage.total_tokens != usage.prompt_tokens + usage.completion_tokens:
        fail(f"streamed usage wrong: {usage!r}")

    # The tool result goes back to the model, which answers in text.
    followup = messages + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": calls[0].id, "type": "function", "function": {"name": "get_weather", "arguments": calls[0].function.arguments}}]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "{\"temp_c\": 18}"},
    ]
    answer = client.chat.completions.create(model=model, messages=followup, tools=TOOLS)
    if not answer.choices[0].message.content:
        fail(f"no text answer after the tool result: {answer!r}")

    print(json.dumps({"ok": True, "args": args, "stream_args": stream_args, "tool_calls": len(streamed),
                      "answer": answer.choices[0].message.content}))


if __name__ == "__main__":
    main()
