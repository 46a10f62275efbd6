"""OpenAI's sampling fields through the official `openai` client against `liger serve` (run by
cli/tests/serve_fields.rs):

    openai_fields.py BASE_URL LIGER_BINARY MODEL.gguf

- `logprobs` of each generated token (and its top alternatives) equal the log-softmax of
  `liger score`'s logits at that position, within 1e-4;
- `stop` cuts the text where the string begins, also when the string spans two tokens;
- `logit_bias` +100 forces a token, -100 bans one; a token id outside the vocabulary is a 400;
- `n: 3` gives three choices: greedy, all equal to the one greedy answer; sampled with a seed,
  reproducible (whole and streamed alike) and not all equal; `n` beyond `--parallel` is a 400;
- `seed` makes a sampled answer reproducible; penalties out of range and unknown fields are a
  400 that names the field; chat `logprobs` / `top_logprobs` come in OpenAI's shape.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import urllib.request

import numpy as np
import openai

base, liger, model = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base + "/v1", api_key="none")
TOL = 1e-4


def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def greedy(prompt, max_tokens, **extra):
    return client.completions.create(model="m", prompt=prompt, max_tokens=max_tokens, temperature=0, **extra)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max()
    return x - (m + math.log(np.exp(x - m).sum()))


# --- logprobs against `liger score`
prompt = "The capital of France is"
prompt_ids = post("/tokenize", {"content": prompt, "add_special": True})["tokens"]
out = greedy(prompt, 8, logprobs=5)
choice = out.choices[0]
lp = choice.logprobs
assert len(lp.tokens) == out.usage.completion_tokens == len(lp.token_logprobs), lp
# The generated ids, as `liger run` finds them greedily from the same prompt ids.
run = subprocess.run([liger, "run", "-m", model, "--prompt-ids", ",".join(map(str, prompt_ids)),
                      "--temp", "0", "--ids", "-n", str(len(lp.tokens)), "--ignore-eos"],
                     capture_output=True, text=True, check=True)
generated = [int(t) for t in run.stdout.split()]
assert post("/detokenize", {"tokens": generated})["content"] == choice.text, (generated, choice.text)
with tempfile.TemporaryDirectory() as d:
    npy = os.path.join(d, "logits.npy")
    ids = prompt_ids + generated
    subprocess.run([liger, "score", "-m", model, "--ids", ",".join(map(str, ids)), "--out", npy],
                   capture_output=True, check=True)
    logits = np.load(npy)
worst = 0.0
for k, token_id in enumerate(generated):
    want = log_softmax(logits[len(prompt_ids) - 1 + k])
    got = lp.token_logprobs[k]
    worst = max(worst, abs(got - want[token_id]))
    assert abs(got - want[token_id]) < TOL, f"token {k}: logprob {got} vs liger score {want[token_id]}"
    # The legacy format keys alternatives by their text: two tokens of one text (bytes of one
    # character) keep one entry. Every entry must be one of the 5 best, the best among them.
    top_want = sorted(want, reverse=True)[:5]
    top_got = sorted(lp.top_logprobs[k].values(), reverse=True)
    assert 1 <= len(top_got) <= 5 and abs(top_got[0] - top_want[0]) < TOL, (top_got, top_want)
    for g in top_got:
        assert min(abs(g - w) for w in top_want) < TOL, f"token {k}: top logprobs {top_got} vs {top_want}"
assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset), lp.text_offset
print(f"logprobs: {len(generated)} tokens equal liger score's log-softmax (worst {worst:.1e})")

# --- stop strings, within a token and across two
text = greedy("1, 2, 3, 4,", 24, logprobs=0)
full, tokens = text.choices[0].text, text.choices[0].logprobs.tokens
assert text.choices[0].finish_reason == "length", text
# A stop string made of the end of one token and the start of the next.
offsets = text.choices[0].logprobs.text_offset
i = next(i for i in range(1, len(tokens) - 1) if tokens[i] and tokens[i + 1]
         and full.find(tokens[i][-1] + tokens[i + 1][0]) == offsets[i + 1] - 1)
across = tokens[i][-1] + tokens[i + 1][0]
cut = greedy("1, 2, 3, 4,", 24, stop=[across, "never-there"])
want = full[:full.find(across)]
assert cut.choices[0].text == want, (cut.choices[0].text, want, across)
assert cut.choices[0].finish_reason == "stop", cut
streamed = "".join(c.choices[0].text for c in client.completions.create(
    model="m", prompt="1, 2, 3, 4,", max_tokens=24, temperature=0, stop=across, stream=True) if c.choices)
assert streamed == want, (streamed, want)
print(f"stop: {across!r} (across tokens {i} and {i + 1}) cuts {full!r} to {want!r}, streamed too")

# --- logit bias
first = generated[0]
banned = greedy(prompt, 1, logit_bias={str(first): -100}, logprobs=0)
assert banned.choices[0].logprobs.tokens[0] != lp.tokens[0], banned
forced_id = post("/tokenize", {"content": " banana"})["tokens"][0]
forced = greedy(prompt, 4, logit_bias={str(forced_id): 100})
word = post("/detokenize", {"tokens": [forced_id]})["content"]
assert forced.choices[0].text == word * 4, (forced.choices[0].text, word)
try:
    greedy(prompt, 1, logit_bias={"999999999": 5})
    raise AssertionError("a token outside the vocabulary was accepted")
except openai.BadRequestError as e:
    assert "999999999" in str(e), e
print(f"logit_bias: -100 bans {lp.tokens[0]!r}, +100 forces {word!r}")

# --- seed, penalties, unknown fields
sampled = [client.completions.create(model="m", prompt="Once upon a time", max_tokens=12, temperature=1.0,
                                     seed=42, presence_penalty=0.5, frequency_penalty=0.5).choices[0].text
           for _ in range(2)]
assert sampled[0] == sampled[1], sampled
for bad, field in [({"presence_penalty": 3}, "presence_penalty"), ({"frequency_penalty": -2.5}, "frequency_penalty"),
                   ({"mirostat": 2}, "mirostat"), ({"echo": True}, "echo"), ({"best_of": 3}, "best_of")]:
    try:
        client.completions.create(model="m", prompt="Hi", max_tokens=1, extra_body=bad)
        raise AssertionError(f"{bad} was accepted")
    except openai.BadRequestError as e:
        assert field in str(e), (bad, e)
print("seed reproducible with penalties; bad penalties and unknown fields named in a 400")

# --- n answers from one prompt (fed once, its state forked)
one = greedy(prompt, 10, extra_body={"ignore_eos": True}).choices[0].text
three = greedy(prompt, 10, n=3, extra_body={"ignore_eos": True})
assert [c.index for c in three.choices] == [0, 1, 2], three
assert all(c.text == one for c in three.choices), ([c.text for c in three.choices], one)
assert three.usage.completion_tokens == 30 and three.usage.prompt_tokens == len(prompt_ids), three.usage


def sampled_n(stream):
    args = dict(model="m", prompt="Once upon a time", max_tokens=16, temperature=1.0, seed=7, n=3,
                extra_body={"ignore_eos": True})
    if not stream:
        return [c.text for c in client.completions.create(**args).choices]
    texts, finished = ["", "", ""], [None] * 3
    for chunk in client.completions.create(stream=True, **args):
        for c in chunk.choices:
            texts[c.index] += c.text
            finished[c.index] = c.finish_reason or finished[c.index]
    assert all(finished), finished
    return texts


runs = [sampled_n(False), sampled_n(False), sampled_n(True)]
assert runs[0] == runs[1] == runs[2], runs
assert len(set(runs[0])) > 1, runs[0]
for too_many in [5, 1000]:  # beyond --parallel 4; beyond any server's bound
    try:
        greedy(prompt, 1, n=too_many)
        raise AssertionError(f"n = {too_many} was accepted")
    except openai.BadRequestError as e:
        assert f"'n' is {too_many}" in str(e), e
print(f"n: greedy x3 equal to the one answer {one!r}; sampled x3 with a seed reproducible, streamed too:",
      runs[0])

# --- chat logprobs, OpenAI's shape
chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4,
                                      temperature=0, logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
content = chat.choices[0].logprobs.content
assert len(content) == chat.usage.completion_tokens, chat
for c in content:
    assert c.logprob <= 0 and len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob >= c.logprob - TOL, c
    assert bytes(c.bytes).decode("utf-8", "replace") == c.token
print("chat logprobs:", [(c.token, round(c.logprob, 3)) for c in content])
print("ok")
