"""A tool round trip through the official `openai` Python client against `liger serve`
(run by cli/tests/serve.rs): a required call (its arguments valid for the tool's schema), a
named call, a streamed call, the result fed back as a `tool` message, a final answer, and
tool_choice "none".

usage: openai_tools.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
"""
import json
import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="unused")
model = client.models.list().data[0].id
tools = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The current weather of a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "maxLength": 24},
                                      "unit": {"enum": ["celsius", "fahrenheit"]}},
                       "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "The time in a time zone",
        "parameters": {"type": "object",
                       "properties": {"zone": {"type": "string", "maxLength": 16}},
                       "required": ["zone"], "additionalProperties": False}}},
]
question = {"role": "user", "content": "What is the weather in Paris?"}


def check_call(call, name):
    assert call.type == "function" and call.id, call
    assert call.function.name == name, call
    args = json.loads(call.function.arguments)
    schema = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == name)
    assert set(args) <= set(schema["properties"]) and set(schema["required"]) <= set(args), args
    for key, value in args.items():
        kind = schema["properties"][key]
        assert value in kind["enum"] if "enum" in kind else isinstance(value, str), (key, value)
    return args


first = client.chat.completions.create(model=model, messages=[question], tools=tools,
                                       tool_choice="required", max_tokens=120, temperature=0)
choice = first.choices[0]
assert choice.finish_reason == "tool_calls", choice
assert choice.message.tool_calls and len(choice.message.tool_calls) == 1, choice.message
call = choice.message.tool_calls[0]
check_call(call, call.function.name)

named = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What time is it in Tokyo?"}], tools=tools,
    tool_choice={"type": "function", "function": {"name": "get_time"}}, max_tokens=120,
    temperature=0)
check_call(named.choices[0].message.tool_calls[0], "get_time")

# Streamed: the call arrives in tool_calls deltas.
streamed, finish = {}, None
for chunk in client.chat.completions.create(model=model, messages=[question], tools=tools,
                                            tool_choice="required", max_tokens=120,
                                            temperature=0, stream=True):
    for c in chunk.choices:
        finish = c.finish_reason or finish
        for d in c.delta.tool_calls or []:
            entry = streamed.setdefault(d.index, {"name": "", "arguments": ""})
            entry["name"] += d.function.name or ""
            entry["arguments"] += d.function.arguments or ""
assert finish == "tool_calls", finish
assert streamed[0]["name"] == call.function.name, streamed
assert json.loads(streamed[0]["arguments"]) == json.loads(call.function.arguments), streamed

# The result fed back, then the answer (the model decides: auto).
messages = [question, choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id,
             "content": json.dumps({"temperature": 21, "sky": "clear"})}]
final = client.chat.completions.create(model=model, messages=messages, tools=tools,
                                       max_tokens=24, temperature=0)
assert final.choices[0].finish_reason in ("stop", "length", "tool_calls"), final
assert final.choices[0].message.content or final.choices[0].message.tool_calls, final

none = client.chat.completions.create(model=model, messages=[question], tools=tools,
                                      tool_choice="none", max_tokens=8, temperature=0)
assert not none.choices[0].message.tool_calls, none

try:
    client.chat.completions.create(model=model, messages=[question], tools=tools,
                                   tool_choice={"type": "function",
                                                "function": {"name": "nope"}}, max_tokens=4)
    raise AssertionError("a tool_choice naming no tool was accepted")
except Exception as e:  # openai.BadRequestError
    assert getattr(e, "status_code", None) == 400, e

print("openai tools: all checks passed")
