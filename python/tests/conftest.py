"""Models and the `liger` CLI for the Python package's tests.

- `tiny`: the GLA fixture (`tests/fixtures/liger/liger_gla`, random weights, no tokenizer)
  converted to F32 by the CLI: logits against `liger score`.
- `smol`: SmolLM2-135M-Instruct as a liger Q8_0 file (from the test data's GGUF, converted by
  the CLI into `$LIGER_TEST_DATA/derived/`, or the one the Rust tests made there): text,
  chat, grammars, tools against `liger run`.

The CLI is `$LIGER_BIN`, else the repository's `target/{debug,release}/liger`. Missing inputs
skip a test, unless `LIGER_REQUIRE_TEST_DATA` is set (CI): then they fail it.
"""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
REQUIRED = bool(os.environ.get("LIGER_REQUIRE_TEST_DATA"))


def missing(what: str):
    if REQUIRED:
        pytest.fail(f"{what} (LIGER_REQUIRE_TEST_DATA is set)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def liger_bin() -> str:
    candidates = [os.environ.get("LIGER_BIN"), REPO / "target/debug/liger", REPO / "target/release/liger"]
    for c in candidates:
        if c and pathlib.Path(c).is_file():
            return str(c)
    missing("no liger binary: build it (cargo build -p liger-cli) or set LIGER_BIN")


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    """Runs a command, failing the test with its output when it fails."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        pytest.fail(f"{cmd} failed ({done.returncode}):\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def tiny(liger_bin, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny") / "liger_gla.f32.gguf"
    run([liger_bin, "convert", REPO / "tests/fixtures/liger/liger_gla", "-o", out, "--type", "f32", "-q"])
    return str(out)


@pytest.fixture(scope="session")
def smol(liger_bin) -> str:
    data = pathlib.Path(os.environ.get("LIGER_TEST_DATA", pathlib.Path.home() / ".cache/liger-test-data"))
    made = data / "derived/smollm2-liger.Q8_0.gguf"
    if made.is_file():
        return str(made)
    source = data / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not source.is_file():
        missing(f"{source} is missing: run scripts/fetch-test-data.sh")
    mine = data / "derived/python-smollm2-liger.Q8_0.gguf"
    if not mine.is_file():
        mine.parent.mkdir(parents=True, exist_ok=True)
        part = mine.with_suffix(".part")
        run([liger_bin, "convert", source, "-o", part, "--type", "q8_0", "-q"])
        part.rename(mine)
    return str(mine)
