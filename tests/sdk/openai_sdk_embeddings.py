"""The official `openai` SDK's embeddings call through Switchyard, as a new user would make it.

Usage: python3 openai_sdk_embeddings.py BASE_URL MODEL DIMENSIONS
The SDK asks for base64 by default and decodes it itself; a float request is checked too.
"""
import math
import sys

from openai import OpenAI

base_url, model, dims = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = OpenAI(base_url=base_url, api_key="sk-client", max_retries=0, timeout=30)


def check(resp, n):
    assert resp.object == "list", resp
    assert len(resp.data) == n, resp
    for i, item in enumerate(resp.data):
        assert item.index == i, item
        assert len(item.embedding) == dims, (len(item.embedding), dims)
        assert all(isinstance(x, float) for x in item.embedding)
        assert math.isfinite(sum(item.embedding))
    assert resp.usage.prompt_tokens > 0, resp.usage
    assert resp.usage.total_tokens == resp.usage.prompt_tokens, resp.usage


one = client.embeddings.create(model=model, input="The quick brown fox")
check(one, 1)
many = client.embeddings.create(model=model, input=["alpha", "beta", "alpha"])
check(many, 3)
assert many.data[0].embedding == many.data[2].embedding, "same text, same vector"
floats = client.embeddings.create(model=model, input=["alpha"], encoding_format="float")
check(floats, 1)
assert [round(x, 5) for x in floats.data[0].embedding] == [round(x, 5) for x in many.data[0].embedding]
print(f"OK {model}: {dims}-dimensional embeddings, base64 and float")
