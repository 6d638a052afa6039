"""Drives Switchyard with the official OpenAI Python SDK, as a new user would.

Usage: python3 openai_sdk_smoke.py BASE_URL MODEL   (BASE_URL like http://127.0.0.1:8080/v1)
Prints a one-line JSON summary and exits 0, or prints the reason to stderr and exits 1.
"""
import json
import sys

from openai import OpenAI


def fail(reason):
    print(reason, file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 3:
        fail("usage: openai_sdk_smoke.py BASE_URL MODEL")
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key="sk-client-test", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "Say hello"}]

    completion = client.chat.completions.create(model=model, messages=messages)
    text = completion.choices[0].message.content
    if not text:
        fail(f"empty completion: {completion!r}")
    if completion.choices[0].finish_reason not in ("stop", "length"):
        fail(f"unexpected finish_reason {completion.choices[0].finish_reason!r}")
    usage = completion.usage
    if usage is None or usage.total_tokens != usage.prompt_tokens + usage.completion_tokens or usage.total_tokens <= 0:
        fail(f"inconsistent usage: {usage!r}")

    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    stream_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    if not stream_text:
        fail("streamed answer had no text")
    usage_chunks = [i for i, c in enumerate(chunks) if c.usage is not None]
    if len(usage_chunks) != 1:
        fail(f"expected exactly one usage chunk, got {len(usage_chunks)}")
    last = chunks[usage_chunks[0]]
    if usage_chunks[0] != len(chunks) - 1 or last.choices:
        fail("the usage chunk must be the last one and have no choices")

    print(json.dumps({
        "ok": True,
        "text": text,
        "stream_text": stream_text,
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "total_tokens": usage.total_tokens},
    }))


if __name__ == "__main__":
    main()
