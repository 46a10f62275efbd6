"""Type stubs of the native module `liger._liger` (the PyO3 extension)."""

from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class LigerError(Exception):
    """An error of the liger runtime: a bad or unreadable model file, a token outside the
    vocabulary, a state from another model, a grammar the engine refuses, ..."""

class Session:
    """One sequence of a model. Its memory is fixed whatever the number of tokens fed. A
    session runs one call at a time (a second thread gets a LigerError, not a wait)."""

    def feed(self, tokens: Sequence[int]) -> None:
        """Feeds token ids (one call; window mode: in 256-token chunks, Ctrl-C between them)."""
    def feed_all_logits(self, tokens: Sequence[int]) -> npt.NDArray[np.float32]:
        """Feeds token ids as one call; the logits after each, float32 [len(tokens), n_vocab]."""
    def logits(self) -> npt.NDArray[np.float32]:
        """The logits after the last token fed, float32 [n_vocab] (a new array)."""
    @property
    def position(self) -> int:
        """Tokens fed so far."""
    @property
    def state_size(self) -> int:
        """Bytes of a saved state (fixed for a model)."""
    @property
    def decode(self) -> str:
        """"window" or "hf-compat"."""
    def save_state(self) -> bytes:
        """The state as versioned, checksummed bytes bound to this model and decode mode."""
    def load_state(self, state: bytes) -> None:
        """Restores a state from save_state (checked; a refused one leaves the session as it was)."""
    def fork(self) -> "Session":
        """A new session with a copy of this one's state."""
    def reset(self) -> None:
        """Forgets everything fed."""

class Generation(Iterator[str]):
    """A generation in progress: iterate it for the text, piece by piece."""

    def __iter__(self) -> "Generation": ...
    def __next__(self) -> str: ...
    def close(self) -> None:
        """Ends the generation here (finish_reason "cancelled")."""
    def read(self) -> str:
        """Runs to the end and returns the whole text."""
    @property
    def finish_reason(self) -> Optional[str]:
        """"stop", "length" or "cancelled" once ended, else None."""
    @property
    def stop_reason(self) -> Optional[str]:
        """"stop_token", "stop_string", "grammar_complete", "length" or "cancelled"."""
    @property
    def tokens(self) -> List[int]:
        """Token ids generated so far."""
    @property
    def text(self) -> str:
        """The text given out so far."""
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def session(self) -> Session:
        """The session it runs on."""

class Model:
    """A liger GGUF file opened on a backend, with its tokenizer and chat template."""

    def __init__(
        self,
        path: str,
        backend: str = "auto",
        threads: Optional[int] = None,
        decode: str = "window",
        use_mmap: bool = True,
    ) -> None: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def n_layers(self) -> int: ...
    @property
    def n_embd(self) -> int: ...
    @property
    def variant(self) -> str:
        """"gla", "hgrn2" or "gsa"."""
    @property
    def window(self) -> int: ...
    @property
    def state_size(self) -> int:
        """Bytes of one sequence's state, fixed at any length."""
    @property
    def chat_template(self) -> Optional[str]: ...
    @property
    def stop_ids(self) -> List[int]: ...
    @property
    def bos_id(self) -> Optional[int]: ...
    @property
    def eos_id(self) -> Optional[int]: ...
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def backend(self) -> str:
        """"cpu", "wgpu" or "cuda"."""
    @property
    def backend_reason(self) -> str: ...
    @property
    def decode(self) -> str: ...
    @property
    def threads(self) -> int: ...
    def tokenize(self, text: str, add_special: bool = True) -> List[int]: ...
    def detokenize(self, ids: Sequence[int], skip_special: bool = False) -> str: ...
    def session(self) -> Session: ...
    def generate(
        self,
        prompt: Union[str, Sequence[int]],
        *,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: Optional[Dict[int, float]] = None,
        seed: Optional[int] = None,
        stop: Union[None, str, List[str]] = None,
        json_schema: Optional[str] = None,
        grammar: Optional[str] = None,
        ignore_eos: bool = False,
        skip_special: bool = False,
        session: Optional[Session] = None,
    ) -> Generation: ...
    def _render_chat(self, body: str, add_generation_prompt: bool = True) -> str: ...
    def _request(
        self, body: str, chat: bool, session: Optional[Session] = None
    ) -> Tuple[Generation, bool]: ...
    def _tool_calls(self, text: str, streamed: bool) -> Tuple[str, str]: ...
    def _shown_prefix(self, text: str) -> str: ...

def feed_many(sessions: Sequence[Session], tokens: Sequence[Sequence[int]]) -> None:
    """Feeds several sessions of one model their own tokens in steps over all of them."""
