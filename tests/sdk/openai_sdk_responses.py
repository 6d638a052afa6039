"""The Responses API through Switchyard with the official OpenAI Python SDK.

Usage: python3 openai_sdk_responses.py BASE_URL MODEL
Runs `client.responses.create` (text), `client.responses.stream` (checking the event order and
numbering), function calling with a `function_call_output` round trip through
`previous_response_id`, and `client.responses.retrieve`. The test's mock upstream answers with a
`get_weather` call when tools are offered. Exits 0, or prints the reason to stderr and exits 1.
"""
import json
import sys

from openai import OpenAI

TOOLS = [{
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}]

TEXT_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def fail(reason):
    print(reason, file=sys.stderr)
    sys.exit(1)


def collapse(kinds):
    """The event kinds with repeated deltas counted once."""
    out = []
    for kind in kinds:
        if not out or out[-1] != kind or not kind.endswith(".delta"):
            out.append(kind)
    return out


def main():
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key="sk-team-a", max_retries=0, timeout=30)

    response = client.responses.create(model=model, input="Say hello", instructions="Be brief.")
    if response.object != "response" or response.status != "completed":
        fail(f"not a completed response: {response!r}")
    if not response.output_text:
        fail(f"no output_text: {response!r}")
    if response.usage is None or response.usage.total_tokens != response.usage.input_tokens + response.usage.output_tokens:
        fail(f"usage wrong: {response.usage!r}")

    kinds = []
    numbers = []
    text = ""
    with client.responses.stream(model=model, input="Say hello") as stream:
        for event in stream:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    # Streams may carry no text item at all only if the model said nothing; ours always do.
    ordered = [k for k in collapse(kinds) if not k.startswith("response.reasoning")]
    if ordered != TEXT_ORDER:
        fail(f"stream events out of order: {kinds}")
    if numbers != list(range(len(numbers))):
        fail(f"sequence numbers not consecutive from 0: {numbers}")
    if not text or final.output_text != text:
        fail(f"streamed text {text!r} and final {final.output_text!r} differ")
    if final.usage is None or final.usage.output_tokens <= 0:
        fail(f"streamed usage missing: {final.usage!r}")

    first = client.responses.create(model=model, input="What is the weather in San Francisco?", tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    if not calls or calls[0].name != "get_weather":
        fail(f"no get_weather call: {first.output!r}")
    json.loads(calls[0].arguments)
    second = client.responses.create(
        model=model,
        previous_response_id=first.id,
        tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "{\"temp_c\": 18}"}],
    )
    if "18" not in second.output_text:
        fail(f"no answer from the tool result: {second.output!r}")

    again = client.responses.retrieve(first.id)
    if again.id != first.id or again.output[0].type != first.output[0].type:
        fail(f"retrieve gave another response: {again!r}")

    print(json.dumps({"ok": True, "events": len(kinds)}))


if __name__ == "__main__":
    main()
