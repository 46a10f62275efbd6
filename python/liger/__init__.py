"""Run Liger models — pretrained LLMs linearized into gated linear recurrences plus a 64-token
sliding window — from Python, on the liger runtime (the same model, backends and generation
loop as the `liger` CLI, server and C ABI).

    import liger
    model = liger.Model("smollm2-liger.q8_0.gguf")
    for piece in model.generate("The capital of France is", max_tokens=16, temperature=0):
        print(piece, end="", flush=True)
    answer = model.create_chat_completion([{"role": "user", "content": "Hi!"}])
    print(answer["choices"][0]["message"]["content"])

A sequence's state has a fixed size (`Model.state_size`) whatever its length: save it
(`Session.save_state()`), fork it, continue it later. The GIL is released while the model
computes; Ctrl-C raises KeyboardInterrupt between tokens.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from ._liger import Generation, LigerError, Session, __version__, feed_many
from ._liger import Model as _NativeModel

__all__ = ["Model", "Session", "Generation", "LigerError", "feed_many", "__version__"]

Message = Dict[str, Any]


def _body(**fields: Any) -> str:
    """An OpenAI request body (JSON text) of the fields given (None left out)."""
    return json.dumps({k: v for k, v in fields.items() if v is not None})


def _schema_text(schema: Union[None, str, Dict[str, Any]]) -> Optional[str]:
    return schema if schema is None or isinstance(schema, str) else json.dumps(schema)


class Model(_NativeModel):
    """A liger GGUF file opened on a backend, with its tokenizer and chat template.

    ``Model(path, backend="auto", threads=None, decode="window", use_mmap=True)``

    The OpenAI-shaped calls (``create_completion``, ``create_chat_completion``) parse their
    arguments as ``liger serve`` parses a request body: the same checks, the same prompt, the
    same tool-call format.
    """

    def generate(self, prompt: Union[str, Sequence[int]], **kwargs: Any) -> Generation:
        """Generates from ``prompt`` (text or token ids): an iterator of text pieces.

        Keywords: ``max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
        repeat_penalty=1.0, repeat_last_n=64, presence_penalty=0.0, frequency_penalty=0.0,
        logit_bias=None, seed=None, stop=None, json_schema=None`` (a dict or JSON text),
        ``grammar=None`` (llguidance Lark), ``ignore_eos=False, skip_special=False,
        session=None`` (continue that session; by default a new one, ``Generation.session``).
        """
        if "json_schema" in kwargs:
            kwargs["json_schema"] = _schema_text(kwargs["json_schema"])
        return super().generate(prompt, **kwargs)

    def apply_chat_template(
        self,
        messages: List[Message],
        tools: Optional[List[Dict[str, Any]]] = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt text of OpenAI-shaped ``messages`` (and ``tools``) through the file's
        chat template (ChatML where the file has none)."""
        return self._render_chat(_body(messages=messages, tools=tools), add_generation_prompt)

    def create_completion(
        self,
        prompt: str,
        max_tokens: Optional[int] = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        stop: Union[None, str, List[str]] = None,
        seed: Optional[int] = None,
        stream: bool = False,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: Optional[Dict[int, float]] = None,
        response_format: Optional[Dict[str, Any]] = None,
        session: Optional[Session] = None,
    ) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """A text completion, shaped as OpenAI's (``text_completion``); with ``stream=True`` an
        iterator of chunks. ``max_tokens=None``: up to a stop token, at most 1024.
        ``session``: continue that session (the prompt is fed after what it holds, without a
        BOS); by default a new one."""
        body = _body(
            prompt=prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, min_p=min_p, stop=stop, seed=seed, repeat_penalty=repeat_penalty,
            presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
            logit_bias=None if logit_bias is None else {str(k): v for k, v in logit_bias.items()},
            response_format=response_format,
        )
        generation, _ = self._request(body, False, session)
        head = {"id": f"cmpl-{time.time_ns():x}", "object": "text_completion",
                "created": int(time.time()), "model": self.name}
        if stream:
            return self._text_chunks(generation, head)
        text = generation.read()
        return dict(head, choices=[{"index": 0, "text": text, "logprobs": None,
                                    "finish_reason": generation.finish_reason}],
                    usage=_usage(generation))

    __call__ = create_completion

    def _text_chunks(self, generation: Generation, head: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        for piece in generation:
            yield dict(head, choices=[{"index": 0, "text": piece, "logprobs": None,
                                       "finish_reason": None}])
        yield dict(head, choices=[{"index": 0, "text": "", "logprobs": None,
                                   "finish_reason": generation.finish_reason}])

    def create_chat_completion(
        self,
        messages: List[Message],
        tools: Optional[List[Dict[str, Any]]] = None,
        tool_choice: Union[None, str, Dict[str, Any]] = None,
        response_format: Optional[Dict[str, Any]] = None,
        stream: bool = False,
        max_tokens: Optional[int] = None,
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        stop: Union[None, str, List[str]] = None,
        seed: Optional[int] = None,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: Optional[Dict[int, float]] = None,
    ) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """A chat completion, shaped as OpenAI's (``chat.completion``): the messages through
        the file's chat template, ``response_format`` (``{"type": "json_object"}`` or
        ``{"type": "json_schema", "json_schema": {"schema": ...}}``) and ``tools`` /
        ``tool_choice`` as ``liger serve`` takes them (calls come back as ``tool_calls``,
        ``finish_reason: "tool_calls"``); with ``stream=True`` an iterator of chunks.
        ``max_tokens=None``: up to a stop token, at most 1024."""
        body = _body(
            messages=messages, tools=tools, tool_choice=tool_choice,
            response_format=response_format, max_tokens=max_tokens, temperature=temperature,
            top_p=top_p, top_k=top_k, min_p=min_p, stop=stop, seed=seed,
            repeat_penalty=repeat_penalty, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            logit_bias=None if logit_bias is None else {str(k): v for k, v in logit_bias.items()},
        )
        generation, uses_tools = self._request(body, True)
        head = {"id": f"chatcmpl-{time.time_ns():x}", "object": "chat.completion",
                "created": int(time.time()), "model": self.name}
        if stream:
            return self._chat_chunks(generation, uses_tools,
                                     dict(head, object="chat.completion.chunk"))
        text = generation.read()
        message: Dict[str, Any] = {"role": "assistant", "content": text}
        finish = generation.finish_reason
        if uses_tools:
            content, calls = self._tool_calls(text, False)
            calls = json.loads(calls)
            if calls:
                message = {"role": "assistant", "content": content or None, "tool_calls": calls}
                finish = "tool_calls"
        return dict(head, choices=[{"index": 0, "message": message, "logprobs": None,
                                    "finish_reason": finish}], usage=_usage(generation))

    def _chat_chunks(self, generation: Generation, uses_tools: bool,
                     head: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        def chunk(delta: Dict[str, Any], finish: Optional[str] = None) -> Dict[str, Any]:
            return dict(head, choices=[{"index": 0, "delta": delta, "logprobs": None,
                                        "finish_reason": finish}])

        yield chunk({"role": "assistant", "content": ""})
        text, shown = "", 0
        for piece in generation:
            if not uses_tools:
                yield chunk({"content": piece})
                continue
            # Text that may begin a tool call is held back until it is clear.
            text += piece
            upto = len(self._shown_prefix(text))
            if upto > shown:
                yield chunk({"content": text[shown:upto]})
                shown = upto
        finish = generation.finish_reason
        if uses_tools:
            _, calls = self._tool_calls(text, True)
            calls = json.loads(calls)
            if calls:
                yield chunk({"tool_calls": calls})
                finish = "tool_calls"
            elif len(text) > shown:
                yield chunk({"content": text[shown:]})
        yield chunk({}, finish)


def _usage(generation: Generation) -> Dict[str, int]:
    return {"prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens}
