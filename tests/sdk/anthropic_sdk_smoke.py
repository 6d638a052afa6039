"""Drives Switchyard's Anthropic Messages endpoint with the official `anthropic` Python SDK,
exactly as a new user would: `anthropic.Anthropic(base_url=GATEWAY_ROOT, api_key=...)`, so the
SDK itself builds `POST {GATEWAY_ROOT}/v1/messages` and parses every answer.

Usage: python3 anthropic_sdk_smoke.py GATEWAY_URL MODEL   (GATEWAY_URL like http://127.0.0.1:8080)

The mock upstreams of tests/anthropic_sdk.rs pick their answer from the text of the last user
message, so each check below sends one of three prompts:

  PROMPT_TEXT  ("Hi")                   -> a plain text answer (TEXT)
  PROMPT_TOOLS (contains "weather")     -> two parallel get_weather calls, Paris then Rome
  PROMPT_THINK (contains "think")       -> reasoning (REASONING) followed by text (THINK_ANSWER)

Every upstream reports usage that the gateway must turn into the same Anthropic usage (USAGE):
input_tokens = prompt - cached, output_tokens = completion (incl. thoughts).

Checks, in order (each prints one `OK` line; the first failure prints `FAILED: ...` to stderr
and exits 1):
  (a) messages.create -> Message with exactly one text block == TEXT, stop_reason end_turn, usage
  (b) messages.stream(...) context manager: text_stream joined == TEXT, get_final_message() with
      the usage and stop_reason; messages.create(stream=True): raw event order; and the SSE wire
      itself (with_streaming_response): content type, every event named after its data's `type`
  (c) tools: two tool_use blocks (get_weather, {"city": "Paris"} / {"city": "Rome"}), stop_reason
      tool_use, non-streamed and streamed (get_final_message())
  (d) thinking={"type": "enabled", "budget_tokens": 1024}: a thinking block (== REASONING) before
      the text block (== THINK_ANSWER), non-streamed and streamed
The last stdout line is `SUMMARY {json}` with the number of requests that must have reached the
upstream, for the Rust test to compare.
"""
import json
import sys

# --- Scenario data: must match tests/anthropic_sdk.rs -----------------------------------------

CLIENT_KEY = "sk-client-abc"

PROMPT_TEXT = "Hi"
PROMPT_TOOLS = "What's the weather in Paris and Rome?"
PROMPT_THINK = "Think it through: what is 2 + 2?"

TEXT = "Hello from the upstream!"
REASONING = "The user asks for 2 + 2. Adding the numbers gives 4."
THINK_ANSWER = "2 + 2 = 4."
ANTHROPIC_SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"

# (input_tokens, output_tokens) the client must see, per scenario, whatever the vendor.
USAGE = {"text": (12, 5), "tools": (20, 9), "think": (12, 10)}
# Cached prompt tokens the upstreams report in the text scenario (OpenAI `cached_tokens`, Gemini
# `cachedContentTokenCount`, Anthropic `cache_read_input_tokens`); when the gateway reports
# `cache_read_input_tokens` at all, it must be this.
TEXT_CACHED = 3

TOOLS = [
    {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    }
]
TOOL_INPUTS = [{"city": "Paris"}, {"city": "Rome"}]

# Per public model of tests/anthropic_sdk.rs: the tool_use ids the upstream sent, which pass
# through unchanged (Gemini sends none, so the gateway makes some up: only checked non-empty and
# distinct), and the signature of thinking blocks ("" for every vendor but Anthropic).
TOOL_IDS = {
    "via-openai": ["call_paris_01", "call_rome_02"],
    "via-azure": ["call_paris_01", "call_rome_02"],
    "via-anthropic": ["toolu_01ParisWeather", "toolu_02RomeWeather"],
}
SIGNATURES = {"via-anthropic": ANTHROPIC_SIGNATURE}

RAW_TYPES = (
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
)

# Requests the script makes, each of which must reach the upstream exactly once (no retries).
UPSTREAM_CALLS = 8


class Failure(Exception):
    pass


def check(condition, reason):
    if not condition:
        raise Failure(reason)


def ok(model, what):
    print(f"OK  {model}: {what}", flush=True)


# --- Checks on whole messages -----------------------------------------------------------------


def check_envelope(message, what):
    from anthropic.types import Message

    check(isinstance(message, Message), f"{what}: expected an anthropic Message, got {type(message).__name__}: {message!r}")
    check(message.type == "message", f"{what}: type {message.type!r}, expected 'message'")
    check(message.role == "assistant", f"{what}: role {message.role!r}, expected 'assistant'")
    check(isinstance(message.id, str) and message.id != "", f"{what}: empty message id in {message!r}")
    check(isinstance(message.model, str) and message.model != "", f"{what}: empty model in {message!r}")
    check(isinstance(message.content, list), f"{what}: content is not a list: {message!r}")


def check_usage(message, scenario, what, cached=None):
    usage = message.usage
    check(usage is not None, f"{what}: no usage in {message!r}")
    want_in, want_out = USAGE[scenario]
    check(
        usage.input_tokens == want_in,
        f"{what}: usage.input_tokens {usage.input_tokens!r}, expected {want_in} (prompt minus cached tokens) in {usage!r}",
    )
    check(
        usage.output_tokens == want_out,
        f"{what}: usage.output_tokens {usage.output_tokens!r}, expected {want_out} in {usage!r}",
    )
    if cached is not None:
        got = getattr(usage, "cache_read_input_tokens", None)
        check(
            got is None or got == cached,
            f"{what}: usage.cache_read_input_tokens {got!r}, expected {cached} (or absent) in {usage!r}",
        )


def block_types(message):
    return [getattr(b, "type", None) for b in message.content]


def check_text_message(message, what):
    check_envelope(message, what)
    check(
        block_types(message) == ["text"],
        f"{what}: expected exactly one text block, got {block_types(message)}: {message.content!r}",
    )
    check(
        message.content[0].text == TEXT,
        f"{what}: text {message.content[0].text!r}, expected {TEXT!r}",
    )
    check(message.stop_reason == "end_turn", f"{what}: stop_reason {message.stop_reason!r}, expected 'end_turn'")
    check(message.stop_sequence is None, f"{what}: stop_sequence {message.stop_sequence!r}, expected None")


def check_tool_message(message, model, what):
    check_envelope(message, what)
    check(
        block_types(message) == ["tool_use", "tool_use"],
        f"{what}: expected exactly two tool_use blocks, got {block_types(message)}: {message.content!r}",
    )
    ids = []
    for block, want_input in zip(message.content, TOOL_INPUTS):
        check(block.name == "get_weather", f"{what}: tool name {block.name!r}, expected 'get_weather'")
        check(
            isinstance(block.input, dict) and block.input == want_input,
            f"{what}: tool input {block.input!r} ({type(block.input).__name__}), expected the dict {want_input!r}",
        )
        check(isinstance(block.id, str) and block.id != "", f"{what}: empty tool_use id in {block!r}")
        ids.append(block.id)
    check(ids[0] != ids[1], f"{what}: both tool_use blocks have the id {ids[0]!r}")
    if model in TOOL_IDS:
        check(ids == TOOL_IDS[model], f"{what}: tool_use ids {ids!r}, expected the upstream's {TOOL_IDS[model]!r} unchanged")
    check(message.stop_reason == "tool_use", f"{what}: stop_reason {message.stop_reason!r}, expected 'tool_use'")


def check_thinking_message(message, model, what):
    check_envelope(message, what)
    check(
        block_types(message) == ["thinking", "text"],
        f"{what}: expected a thinking block then a text block, got {block_types(message)}: {message.content!r}",
    )
    thinking, text = message.content
    check(
        thinking.thinking == REASONING,
        f"{what}: thinking {thinking.thinking!r}, expected the upstream's reasoning {REASONING!r}",
    )
    want_sig = SIGNATURES.get(model, "")
    got_sig = getattr(thinking, "signature", None)
    check(
        got_sig == want_sig,
        f"{what}: thinking signature {got_sig!r}, expected {want_sig!r}"
        + ("" if want_sig else " (empty string for non-Anthropic upstreams)"),
    )
    check(text.text == THINK_ANSWER, f"{what}: text {text.text!r}, expected {THINK_ANSWER!r}")
    check(message.stop_reason == "end_turn", f"{what}: stop_reason {message.stop_reason!r}, expected 'end_turn'")


# --- Checks on event order ---------------------------------------------------------------------


def check_event_order(events, blocks, what):
    """`events`: (type, index) pairs in arrival order (index None where the event has none).

    message_start first; then per block content_block_start, content_block_delta*,
    content_block_stop with indexes 0, 1, ... (`blocks` of them); then exactly one message_delta
    and message_stop last. `ping` is allowed anywhere after message_start."""
    order = [t for t, _ in events]
    check(order, f"{what}: no events at all")
    check(order[0] == "message_start", f"{what}: first event is {order[0]!r}, expected message_start; order {order}")
    rest = [(t, i) for t, i in events[1:] if t != "ping"]
    unknown = [t for t, _ in rest if t not in RAW_TYPES]
    check(not unknown, f"{what}: unexpected event types {unknown}; order {order}")
    check(
        len(rest) >= 2 and rest[-1][0] == "message_stop" and rest[-2][0] == "message_delta",
        f"{what}: expected ... message_delta, message_stop at the end; order {order}",
    )
    check(
        [t for t, _ in rest].count("message_delta") == 1 and [t for t, _ in rest].count("message_stop") == 1,
        f"{what}: expected exactly one message_delta and one message_stop; order {order}",
    )
    body = rest[:-2]
    pos = 0
    block = 0
    while pos < len(body):
        kind, index = body[pos]
        check(kind == "content_block_start", f"{what}: expected content_block_start for block {block}, got {kind!r}; order {order}")
        check(index == block, f"{what}: content_block_start has index {index!r}, expected {block}; order {order}")
        pos += 1
        while pos < len(body) and body[pos][0] == "content_block_delta":
            check(body[pos][1] == block, f"{what}: content_block_delta has index {body[pos][1]!r} inside block {block}; order {order}")
            pos += 1
        check(
            pos < len(body) and body[pos][0] == "content_block_stop",
            f"{what}: block {block} is not closed by content_block_stop; order {order}",
        )
        check(body[pos][1] == block, f"{what}: content_block_stop has index {body[pos][1]!r}, expected {block}; order {order}")
        pos += 1
        block += 1
    check(block == blocks, f"{what}: {block} content blocks, expected {blocks}; order {order}")


def raw_pairs(events):
    return [(e.type, getattr(e, "index", None)) for e in events if e.type in RAW_TYPES or e.type == "ping"]


def sse_events(lines):
    """(event name, data text) per SSE event of an iterator of lines."""
    out = []
    name, data = None, []
    for line in lines:
        line = line.rstrip("\r\n")
        if line == "":
            if name is not None or data:
                out.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            value = line[len("data:"):]
            data.append(value[1:] if value.startswith(" ") else value)
    if name is not None or data:
        out.append((name, "\n".join(data)))
    return out


# --- The checks ----------------------------------------------------------------------------------


def run(base_url, model):
    import anthropic

    # No SDK retries: a failure must show, not be papered over by a second try.
    client = anthropic.Anthropic(base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
    hi = [{"role": "user", "content": PROMPT_TEXT}]
    weather = [{"role": "user", "content": PROMPT_TOOLS}]
    think = [{"role": "user", "content": PROMPT_THINK}]
    thinking = {"type": "enabled", "budget_tokens": 1024}

    # (a) plain message
    what = "(a) messages.create text"
    message = client.messages.create(model=model, max_tokens=256, messages=hi)
    check_text_message(message, what)
    check_usage(message, "text", what, cached=TEXT_CACHED)
    ok(model, what)

    # (b) streamed with the helper: text_stream and the final message
    what = "(b) messages.stream text"
    with client.messages.stream(model=model, max_tokens=256, messages=hi) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    check(pieces, f"{what}: text_stream yielded nothing")
    check("".join(pieces) == TEXT, f"{what}: text_stream gave {''.join(pieces)!r} in {pieces!r}, expected {TEXT!r}")
    check_text_message(final, what + " get_final_message()")
    check_usage(final, "text", what + " get_final_message()", cached=TEXT_CACHED)
    ok(model, f"{what} ({len(pieces)} text deltas)")

    # (b) raw events
    what = "(b) messages.create(stream=True) raw events"
    events = list(client.messages.create(model=model, max_tokens=256, messages=hi, stream=True))
    check_event_order(raw_pairs(events), 1, what)
    start = events[0]
    check(start.message.role == "assistant", f"{what}: message_start role {start.message.role!r}")
    check(start.message.content == [], f"{what}: message_start content is not empty: {start.message.content!r}")
    check(start.message.stop_reason is None, f"{what}: message_start stop_reason {start.message.stop_reason!r}, expected None")
    first_block = next(e for e in events if e.type == "content_block_start")
    check(
        first_block.content_block.type == "text",
        f"{what}: first block is {first_block.content_block.type!r}, expected 'text'",
    )
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    check(all(d.type == "text_delta" for d in deltas), f"{what}: non-text deltas {deltas!r}")
    check("".join(d.text for d in deltas) == TEXT, f"{what}: text deltas {[d.text for d in deltas]!r}, expected {TEXT!r} joined")
    message_delta = next(e for e in events if e.type == "message_delta")
    check(
        message_delta.delta.stop_reason == "end_turn",
        f"{what}: message_delta stop_reason {message_delta.delta.stop_reason!r}, expected 'end_turn'",
    )
    check(
        message_delta.usage.output_tokens == USAGE["text"][1],
        f"{what}: message_delta usage.output_tokens {message_delta.usage.output_tokens!r}, expected {USAGE['text'][1]}",
    )
    ok(model, f"{what}: {' '.join(t for t, _ in raw_pairs(events))}")

    # (b) the SSE wire: content type, and each event's `event:` name equals its data's `type`
    what = "(b) SSE framing"
    with client.messages.with_streaming_response.create(model=model, max_tokens=256, messages=hi, stream=True) as response:
        content_type = response.headers.get("content-type", "")
        wire = sse_events(response.iter_lines())
    check(content_type.startswith("text/event-stream"), f"{what}: content-type {content_type!r}, expected text/event-stream")
    check(wire, f"{what}: no SSE events")
    pairs = []
    for name, data in wire:
        check(name is not None, f"{what}: an event without an `event:` line (the SDK ignores those): data {data!r}")
        try:
            payload = json.loads(data)
        except ValueError:
            raise Failure(f"{what}: event {name!r} has non-JSON data {data!r}")
        check(
            isinstance(payload, dict) and payload.get("type") == name,
            f"{what}: event named {name!r} carries data of type {payload.get('type') if isinstance(payload, dict) else payload!r}",
        )
        pairs.append((name, payload.get("index")))
    check_event_order(pairs, 1, what)
    ok(model, what)

    # (c) tools, non-streamed
    what = "(c) messages.create tools"
    message = client.messages.create(model=model, max_tokens=256, tools=TOOLS, messages=weather)
    check_tool_message(message, model, what)
    check_usage(message, "tools", what)
    ok(model, f"{what}: ids {[b.id for b in message.content]}")

    # (c) tools, streamed
    what = "(c) messages.stream tools"
    with client.messages.stream(model=model, max_tokens=256, tools=TOOLS, messages=weather) as stream:
        events = list(stream)
        final = stream.get_final_message()
    check_event_order(raw_pairs(events), 2, what)
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    check(
        [b.type for b in starts] == ["tool_use", "tool_use"],
        f"{what}: content_block_start types {[b.type for b in starts]}, expected two tool_use",
    )
    check_tool_message(final, model, what + " get_final_message()")
    check_usage(final, "tools", what + " get_final_message()")
    ok(model, what)

    # (d) thinking, non-streamed
    what = "(d) messages.create thinking"
    message = client.messages.create(model=model, max_tokens=2048, thinking=thinking, messages=think)
    check_thinking_message(message, model, what)
    check_usage(message, "think", what)
    ok(model, what)

    # (d) thinking, streamed
    what = "(d) messages.stream thinking"
    with client.messages.stream(model=model, max_tokens=2048, thinking=thinking, messages=think) as stream:
        events = list(stream)
        final = stream.get_final_message()
    check_event_order(raw_pairs(events), 2, what)
    thought = "".join(e.thinking for e in events if e.type == "thinking")
    said = "".join(e.text for e in events if e.type == "text")
    check(thought == REASONING, f"{what}: thinking deltas joined {thought!r}, expected {REASONING!r}")
    check(said == THINK_ANSWER, f"{what}: text deltas joined {said!r}, expected {THINK_ANSWER!r}")
    check_thinking_message(final, model, what + " get_final_message()")
    check_usage(final, "think", what + " get_final_message()")
    ok(model, what)

    return {"ok": True, "model": model, "upstream_calls": UPSTREAM_CALLS}


def main():
    if len(sys.argv) != 3:
        print("usage: anthropic_sdk_smoke.py GATEWAY_URL MODEL", file=sys.stderr)
        return 2
    base_url, model = sys.argv[1], sys.argv[2]
    try:
        summary = run(base_url, model)
    except Failure as e:
        print(f"FAILED ({model}): {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"FAILED: the anthropic package is not installed ({e})", file=sys.stderr)
        return 1
    except Exception as e:  # API errors, connection errors, bad JSON: say what happened
        detail = ""
        response = getattr(e, "response", None)
        if response is not None:
            try:
                detail = f" (HTTP {response.status_code}: {response.text[:1000]})"
            except Exception:
                pass
        import traceback

        traceback.print_exc()
        print(f"FAILED ({model}): {type(e).__name__}: {e}{detail}", file=sys.stderr)
        return 1
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
