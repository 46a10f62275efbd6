"""The official `openai` Python client against `liger serve` (run by cli/tests/serve.rs).

usage: openai_client.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
"""
import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="unused")

models = client.models.list()
model = models.data[0].id
assert model, models

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=8,
    temperature=0,
)
assert chat.choices[0].message.role == "assistant", chat
assert chat.usage.prompt_tokens > 0, chat.usage
first = chat.usage

follow = client.chat.completions.create(
    model=model,
    messages=[
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": chat.choices[0].message.content or ""},
        {"role": "user", "content": "And of Italy?"},
    ],
    max_tokens=8,
    temperature=0,
)
cached = follow.usage.prompt_tokens_details.cached_tokens
assert cached == first.prompt_tokens + first.completion_tokens, (first, follow.usage)

pieces, finish, usage = [], None, None
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Count to five."}],
    max_tokens=6,
    temperature=1.0,
    seed=7,
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        pieces.append(choice.delta.content or "")
        finish = choice.finish_reason or finish
assert finish in ("stop", "length"), finish
assert usage is not None and usage.completion_tokens <= 6, usage

text = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5, temperature=0)
assert text.usage.completion_tokens <= 5 and text.choices[0].finish_reason in ("stop", "length"), text

try:
    client.chat.completions.create(model=model, messages=[], max_tokens=1)
    raise AssertionError("an empty message list was accepted")
except Exception as e:  # openai.BadRequestError
    assert getattr(e, "status_code", None) == 400, e

print("openai client: all checks passed")
