"""The official openai client against a running tandem server.

Usage: python openai_client.py BASE_URL API_KEY
"""
import sys

from openai import OpenAI

base, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base, api_key=key)

models = client.models.list()
assert len(models.data) == 1, models

r = client.chat.completions.create(
    model=models.data[0].id,
    messages=[{"role": "user", "content": "Name the capital city of France."}],
    max_tokens=16,
    temperature=0,
    logprobs=True,
    top_logprobs=2,
)
assert "Paris" in r.choices[0].message.content, r
assert r.usage.completion_tokens == len(r.choices[0].logprobs.content), r
assert len(r.choices[0].logprobs.content[0].top_logprobs) == 2

stream = client.chat.completions.create(
    model="x",
    messages=[{"role": "user", "content": "Name the capital city of France."}],
    max_tokens=16,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
parts, usage = [], None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
assert "".join(parts) == r.choices[0].message.content, (parts, r)
assert usage and usage.completion_tokens == r.usage.completion_tokens, usage

c = client.completions.create(model="x", prompt="The capital of France is", max_tokens=30, temperature=0, stop=["United"], n=2)
assert len(c.choices) == 2 and all(ch.text.startswith(" Paris.") for ch in c.choices), c
assert all("United" not in ch.text for ch in c.choices)

try:
    client.chat.completions.create(model="x", messages=[{"role": "wizard", "content": "x"}])
    raise SystemExit("an unknown role was accepted")
except Exception as e:  # openai.BadRequestError
    assert getattr(e, "status_code", None) == 400, e

print("openai client: ok")
