"""Drives Switchyard's legacy text completions with the official OpenAI Python SDK.

Usage: python3 openai_sdk_completions.py BASE_URL MODEL EXPECTED_TEXT

(a) client.completions.create(...): a text_completion whose text is EXPECTED_TEXT, finish_reason
    stop or length, consistent usage;
(b) the same streamed with stream_options.include_usage: the text deltas join to EXPECTED_TEXT,
    exactly one chunk carries usage, with no choices, and it is the last;
(c) streamed without stream_options: the same text, and no usage at all;
(d) suffix is refused with a 400 (openai.BadRequestError) naming the param.
Prints a one-line JSON summary and exits 0, or prints the reason to stderr and exits 1.
"""
import json
import sys


class Failure(Exception):
    pass


def check(condition, reason):
    if not condition:
        raise Failure(reason)


def check_usage(usage, what):
    check(usage is not None, f"{what}: no usage")
    check(
        isinstance(usage.total_tokens, int)
        and usage.total_tokens > 0
        and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"{what}: inconsistent usage {usage!r}",
    )


def streamed_text(chunks):
    return "".join(choice.text or "" for chunk in chunks for choice in (chunk.choices or []))


def run(base_url, model, expected):
    import openai
    from openai import OpenAI

    # No SDK retries: a failure must show, not be papered over by a second try.
    client = OpenAI(base_url=base_url, api_key="sk-client-test", max_retries=0, timeout=30)
    prompt = "Say hello"

    # (a) plain
    completion = client.completions.create(model=model, prompt=prompt, max_tokens=20)
    check(completion.object == "text_completion", f"plain: object {completion.object!r}")
    check(completion.id.startswith("cmpl-"), f"plain: id {completion.id!r}")
    check(len(completion.choices) == 1, f"plain: choices {completion.choices!r}")
    choice = completion.choices[0]
    check(choice.text == expected, f"plain: text {choice.text!r}, expected {expected!r}")
    check(choice.finish_reason in ("stop", "length"), f"plain: finish_reason {choice.finish_reason!r}")
    check_usage(completion.usage, "plain")

    # (b) streamed, with a usage chunk
    chunks = list(
        client.completions.create(
            model=model, prompt=prompt, max_tokens=20, stream=True,
            stream_options={"include_usage": True},
        )
    )
    check(chunks, "stream: no chunks")
    text = streamed_text(chunks)
    check(text == expected, f"stream: text {text!r}, expected {expected!r}")
    finishes = [c.finish_reason for chunk in chunks for c in (chunk.choices or []) if c.finish_reason]
    check(finishes and finishes[-1] in ("stop", "length"), f"stream: finish reasons {finishes!r}")
    usage_at = [i for i, chunk in enumerate(chunks) if chunk.usage is not None]
    check(len(usage_at) == 1, f"stream: expected one chunk with usage, got {len(usage_at)} of {len(chunks)}")
    check(usage_at[0] == len(chunks) - 1, f"stream: the usage chunk is #{usage_at[0]} of {len(chunks)}")
    check(chunks[-1].choices == [], f"stream: the usage chunk has choices: {chunks[-1]!r}")
    check_usage(chunks[-1].usage, "stream")

    # (c) streamed, no usage asked
    chunks = list(client.completions.create(model=model, prompt=prompt, max_tokens=20, stream=True))
    check(streamed_text(chunks) == expected, f"stream without usage: text {streamed_text(chunks)!r}")
    check(all(chunk.usage is None for chunk in chunks), "stream without usage: a chunk has usage")

    # (d) suffix is refused
    try:
        client.completions.create(model=model, prompt=prompt, suffix="end", max_tokens=5)
        raise Failure("suffix: not refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400, f"suffix: status {e.status_code}")
        check(e.body and e.body.get("param") == "suffix", f"suffix: error body {e.body!r}")

    return {"ok": True, "text": choice.text, "usage": completion.usage.total_tokens}


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        summary = run(sys.argv[1], sys.argv[2], sys.argv[3])
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
