"""The Python package against the CLI on the same files: logits (`liger score`), greedy text
(`liger run`), streaming, grammars, tools, states, threads, Ctrl-C and hostile input."""

import _thread
import json
import pathlib
import re
import signal
import threading
import time

import numpy as np
import pytest

import liger
from conftest import REPO, run

# The CPU computes one forward and the CLI's `score` with the same code: equal to rounding.
SCORE_TOLERANCE = 1e-5
# Token by token vs one forward (window mode: exact math, other summation order), as the Rust
# tests' CPU tolerance.
DECODE_TOLERANCE = 1e-3

PROMPT = "The capital of France is"


def first_mismatch(a: np.ndarray, b: np.ndarray, tol: float) -> str:
    diff = np.abs(a - b)
    bad = np.argwhere(diff > tol)
    if len(bad) == 0:
        return ""
    at = tuple(bad[0])
    return f"first mismatch at {at}: {a[at]} vs {b[at]} (max |diff| {diff.max():.3g} > {tol})"


@pytest.fixture(scope="module")
def tiny_model(tiny):
    return liger.Model(tiny)


@pytest.fixture(scope="module")
def smol_model(smol):
    return liger.Model(smol, threads=2)


def test_logits_equal_liger_score(tiny, tiny_model, liger_bin, tmp_path):
    ids = [(7 * i + 3) % tiny_model.n_vocab for i in range(80)]  # past the 64-token window
    out = tmp_path / "score.npy"
    run([liger_bin, "score", "-m", tiny, "--ids", ",".join(map(str, ids)), "--out", out])
    reference = np.load(out)
    mine = tiny_model.session().feed_all_logits(ids)
    assert mine.shape == reference.shape == (len(ids), tiny_model.n_vocab)
    assert mine.dtype == np.float32
    assert not first_mismatch(mine, reference, SCORE_TOLERANCE), first_mismatch(mine, reference, SCORE_TOLERANCE)
    # Token by token, each step's logits() equals the forward's row.
    s = tiny_model.session()
    rows = []
    for t in ids:
        s.feed([t])
        rows.append(s.logits())
    stepped = np.stack(rows)
    msg = first_mismatch(stepped, reference, DECODE_TOLERANCE)
    assert not msg, msg
    assert s.position == len(ids)


def test_greedy_text_equals_liger_run(smol, smol_model, liger_bin):
    cli = run([liger_bin, "run", "-m", smol, "-p", PROMPT, "-n", "40", "--temp", "0", "--ids"])
    cli_ids = [int(x) for x in cli.stdout.split()]
    g = smol_model.generate(PROMPT, max_tokens=40, temperature=0)
    text = "".join(g)
    assert g.tokens == cli_ids, f"python {g.tokens}\ncli    {cli_ids}"
    cli_text = run([liger_bin, "run", "-m", smol, "-p", PROMPT, "-n", "40", "--temp", "0"]).stdout
    assert text == cli_text[:-1]  # the CLI ends its text with a newline
    assert g.finish_reason in ("stop", "length")
    assert g.prompt_tokens == len(smol_model.tokenize(PROMPT))


def test_streaming_gives_the_text_in_pieces(smol_model):
    g = smol_model.generate(PROMPT, max_tokens=24, temperature=0, ignore_eos=True)
    pieces = list(g)
    assert len(pieces) > 5 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == g.text
    assert g.completion_tokens == 24 and g.finish_reason == "length"
    chunks = list(smol_model.create_completion(PROMPT, max_tokens=12, temperature=0, stream=True))
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    whole = smol_model.create_completion(PROMPT, max_tokens=12, temperature=0)
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert whole["usage"]["completion_tokens"] == 12
    chat = list(smol_model.create_chat_completion([{"role": "user", "content": "Hi!"}], max_tokens=8,
                                                  stream=True, seed=1))
    assert chat[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chat[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["object"] == "chat.completion.chunk" for c in chat)


def test_sampling_repeats_with_its_seed_and_stops_at_a_string(smol_model):
    a = smol_model.generate(PROMPT, max_tokens=16, temperature=1.0, seed=7, ignore_eos=True).read()
    b = smol_model.generate(PROMPT, max_tokens=16, temperature=1.0, seed=7, ignore_eos=True).read()
    assert a == b
    greedy = smol_model.generate(PROMPT, max_tokens=30, temperature=0, ignore_eos=True).read()
    cut = greedy.strip()[:3]
    g = smol_model.generate(PROMPT, max_tokens=30, temperature=0, ignore_eos=True, stop=cut)
    assert g.read() == greedy[: greedy.index(cut)]
    assert g.stop_reason == "stop_string"


def test_json_schema_constrains_the_output(smol_model):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    text = smol_model.generate("A person as JSON:", json_schema=schema, max_tokens=80, temperature=0).read()
    value = json.loads(text)
    assert set(value) == {"name", "age"} and isinstance(value["age"], int), text
    answer = smol_model.create_chat_completion(
        [{"role": "user", "content": "Give a person as JSON."}], max_tokens=80, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    value = json.loads(answer["choices"][0]["message"]["content"])
    assert set(value) == {"name", "age"}
    with pytest.raises(liger.LigerError, match="json_schema"):
        smol_model.generate("x", json_schema="{not json")


def test_a_required_tool_call_comes_back_as_openai_writes_it(smol_model):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}},
                       "required": ["city"]}}}]
    answer = smol_model.create_chat_completion(
        [{"role": "user", "content": "What is the weather in Paris?"}], tools=tools,
        tool_choice="required", max_tokens=200, temperature=0)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls", answer
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert "city" in json.loads(call["function"]["arguments"])
    prompt = smol_model.apply_chat_template([{"role": "user", "content": "Hi there"}], tools=tools)
    assert "Hi there" in prompt and "get_weather" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_a_saved_state_continues_exactly(smol_model, tiny_model):
    s = smol_model.session()
    s.feed(smol_model.tokenize(PROMPT))
    state = s.save_state()
    assert isinstance(state, bytes) and len(state) == s.state_size
    fork = s.fork()
    first = smol_model.generate([], max_tokens=12, temperature=0, ignore_eos=True, session=s).read()
    restored = smol_model.session()
    restored.load_state(state)
    assert restored.position == len(smol_model.tokenize(PROMPT))
    again = smol_model.generate([], max_tokens=12, temperature=0, ignore_eos=True, session=restored).read()
    from_fork = smol_model.generate([], max_tokens=12, temperature=0, ignore_eos=True, session=fork).read()
    assert first == again == from_fork
    # The state's size is fixed: after 12 more tokens it is the same.
    assert len(s.save_state()) == len(state)
    with pytest.raises(liger.LigerError, match="state"):
        tiny_model.session().load_state(state)  # another model's state
    with pytest.raises(liger.LigerError):
        restored.load_state(state[:100])
    assert restored.position == len(smol_model.tokenize(PROMPT)) + 12  # unchanged by the refusal


def test_sessions_fed_together_equal_sessions_fed_alone(tiny_model):
    ids = [[1, 2, 3, 4, 5], [9, 8, 7], [42]]
    together = [tiny_model.session() for _ in ids]
    liger.feed_many(together, ids)
    for s, t in zip(together, ids):
        alone = tiny_model.session()
        alone.feed(t)
        msg = first_mismatch(s.logits(), alone.logits(), DECODE_TOLERANCE)
        assert not msg, msg
    with pytest.raises(liger.LigerError, match="twice"):
        liger.feed_many([together[0], together[0]], [[1], [2]])


def test_the_gil_is_released_while_the_model_computes(smol_model):
    ids = smol_model.tokenize("word " * 600)
    s = smol_model.session()
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    t = threading.Thread(target=count)
    t.start()
    time.sleep(0.05)
    start = time.perf_counter()
    s.feed(ids)
    end = time.perf_counter()
    stop.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    # The counting thread ran throughout the feed: its ticks cover the call without a gap of
    # more than a few scheduler slices (holding the GIL, the call would be one long gap).
    assert end - start > 0.2, "the feed was too short to tell"
    gaps = np.diff([start] + during + [end])
    assert len(during) > 1000 and gaps.max() < 0.1, (len(during), gaps.max(), end - start)


@pytest.fixture
def sigint_raises():
    """Ctrl-C as an interactive Python has it: a process started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python then leaves it so (and
    `_thread.interrupt_main` does nothing)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_stops_a_generation_between_tokens(smol_model, sigint_raises):
    # Long enough to be interrupted, bounded so that a missed interrupt fails in seconds.
    g = smol_model.generate(PROMPT, max_tokens=2000, temperature=0, ignore_eos=True)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        for _ in g:
            pass
    assert time.perf_counter() - start < 3
    assert g.finish_reason is None and g.completion_tokens > 0
    # It goes on from there when iterated again, and ends when closed.
    assert next(g)
    g.close()
    assert g.finish_reason == "cancelled" and list(g) == []
    # A long prompt is interrupted between its chunks.
    s = smol_model.session()
    ids = smol_model.tokenize("word " * 4000)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        s.feed(ids)
    assert 0 < s.position < len(ids) and s.position % 256 == 0


def test_hostile_input_is_an_exception_never_a_crash(smol_model, tmp_path):
    with pytest.raises(liger.LigerError, match="loading"):
        liger.Model(str(tmp_path / "absent.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    with pytest.raises(liger.LigerError):
        liger.Model(str(junk))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(pathlib.Path(smol_model.path).read_bytes()[:1_000_000])
    with pytest.raises(liger.LigerError):
        liger.Model(str(truncated))
    with pytest.raises(liger.LigerError, match="backend"):
        liger.Model(smol_model.path, backend="tpu")
    s = smol_model.session()
    s.feed([1, 2])
    with pytest.raises(liger.LigerError, match="vocabulary"):
        s.feed([3, smol_model.n_vocab + 5])
    assert s.position == 2  # nothing of a refused feed was fed
    with pytest.raises(liger.LigerError, match="vocabulary"):
        smol_model.detokenize([smol_model.n_vocab])
    with pytest.raises(liger.LigerError, match="vocabulary"):
        smol_model.generate([smol_model.n_vocab])
    with pytest.raises(OverflowError):
        s.feed([-1])
    with pytest.raises(liger.LigerError, match="empty"):
        smol_model.generate([])
    with pytest.raises(liger.LigerError, match="state"):
        s.load_state(b"\x00" * 64)
    with pytest.raises(liger.LigerError, match="nothing fed"):
        smol_model.session().logits()
    with pytest.raises(liger.LigerError, match="temperature"):
        smol_model.create_chat_completion([{"role": "user", "content": "x"}], temperature=-1)
    for bad in (dict(temperature=float("nan")), dict(top_p=0.0), dict(min_p=2.0),
                dict(repeat_penalty=0.0), dict(logit_bias={5: float("inf")})):
        with pytest.raises(liger.LigerError, match=next(iter(bad)).split("_")[0]):
            smol_model.generate("x", **bad)
    with pytest.raises(liger.LigerError, match="role"):
        smol_model.create_chat_completion([{"role": "wizard", "content": "x"}])


def test_metadata(smol_model):
    m = smol_model
    assert m.n_vocab == 49152 and m.n_layers == 30 and m.variant == "gla"
    assert m.state_size > 0 and m.stop_ids and m.backend == "cpu" and m.decode == "window"
    assert "im_start" in (m.chat_template or "")
    assert m.detokenize(m.tokenize("Hello world", add_special=False)) == "Hello world"
    assert repr(m).startswith("Model(")


def test_the_readme_example_runs_as_written(smol):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    # The example opens the demo's file; here the test model.
    code = re.sub(r"^path = .*$", f"path = {smol!r}", block, count=1, flags=re.M)
    assert code != block, "the README example has no `path = ...` line"
    done = run(["python3", "-c", code])
    assert done.stdout.strip()


def test_a_completion_continues_a_session(smol_model):
    s = smol_model.session()
    first = smol_model.create_completion(PROMPT, max_tokens=4, temperature=0, session=s)
    after_first = s.position
    assert after_first == first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    more = smol_model.create_completion(" And", max_tokens=4, temperature=0, session=s)
    # Fed after what the session holds, without a BOS.
    assert more["usage"]["prompt_tokens"] == len(smol_model.tokenize(" And", add_special=False))
    assert s.position == after_first + more["usage"]["prompt_tokens"] + more["usage"]["completion_tokens"]
