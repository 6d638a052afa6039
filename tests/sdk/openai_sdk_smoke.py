"""Drives Switchyard with the official OpenAI Python SDK, as a new user would.

Usage: python3 openai_sdk_smoke.py BASE_URL MODEL   (BASE_URL like http://127.0.0.1:8080/v1)

(a) a plain chat completion: non-empty text, finish_reason stop or length, consistent usage;
(b) a streamed one with stream_options.include_usage: non-empty text deltas, and exactly one
    usage chunk, with no choices, as the very last chunk;
(c) models.list names the model, and models.retrieve returns it.
Prints a one-line JSON summary and exits 0, or prints the reason to stderr and exits 1.
"""
import json
import sys


class Failure(Exception):
    pass


def check(condition, reason):
    if not condition:
        raise Failure(reason)


def usage_dict(usage):
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def check_usage(usage, what):
    check(usage is not None, f"{what}: no usage")
    check(
        isinstance(usage.total_tokens, int)
        and usage.total_tokens > 0
        and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"{what}: inconsistent usage {usage!r}",
    )


def run(base_url, model):
    from openai import OpenAI

    # No SDK retries: a failure must show, not be papered over by a second try.
    client = OpenAI(base_url=base_url, api_key="sk-client-test", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "Say hello"}]

    # (a) plain completion
    completion = client.chat.completions.create(model=model, messages=messages)
    check(completion.choices, f"plain: no choices in {completion!r}")
    choice = completion.choices[0]
    text = choice.message.content
    check(isinstance(text, str) and text != "", f"plain: empty message content in {completion!r}")
    check(choice.finish_reason in ("stop", "length"), f"plain: unexpected finish_reason {choice.finish_reason!r}")
    check_usage(completion.usage, "plain")

    # (b) streamed completion with a usage chunk
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    check(chunks, "stream: no chunks")
    stream_text = "".join(
        choice.delta.content or "" for chunk in chunks for choice in (chunk.choices or []) if choice.delta
    )
    check(stream_text != "", "stream: the text deltas were empty")
    usage_at = [i for i, chunk in enumerate(chunks) if chunk.usage is not None]
    check(len(usage_at) == 1, f"stream: expected exactly one chunk with usage, got {len(usage_at)} of {len(chunks)}")
    usage_chunk = chunks[usage_at[0]]
    check(usage_chunk.choices == [], f"stream: the usage chunk has choices: {usage_chunk!r}")
    check(usage_at[0] == len(chunks) - 1, f"stream: the usage chunk is #{usage_at[0]} of {len(chunks)}, not the last")
    check_usage(usage_chunk.usage, "stream")

    # (c) the model listing and models.retrieve of the model used
    listed = [m.id for m in client.models.list()]
    check(model in listed, f"models.list: {model!r} not in {listed!r}")
    retrieved = client.models.retrieve(model)
    check(retrieved.id == model and retrieved.object == "model", f"models.retrieve: {retrieved!r}")

    return {
        "ok": True,
        "text": text,
        "stream_text": stream_text,
        "usage": usage_dict(completion.usage),
        "stream_usage": usage_dict(usage_chunk.usage),
    }


def main():
    if len(sys.argv) != 3:
        print("usage: openai_sdk_smoke.py BASE_URL MODEL", file=sys.stderr)
        return 1
    try:
        summary = run(sys.argv[1], sys.argv[2])
    except Failure as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"FAILED: the openai package is not installed ({e})", file=sys.stderr)
        return 1
    except Exception as e:  # API errors, connection errors, bad JSON: say what happened
        detail = ""
        response = getattr(e, "response", None)
        if response is not None:
            try:
                detail = f" (HTTP {response.status_code}: {response.text[:500]})"
            except Exception:
                pass
        print(f"FAILED: {type(e).__name__}: {e}{detail}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
