"""GGUF models without a chat template (base models) get a plain-text transcript prompt, not Llama-2's [INST].

The tiny GGUFs are real llama.cpp models built at test time, one with the ChatML template and one without; what
the backend sent is read back from the tokens llama.cpp evaluated, the same way the KV-prefix test does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs
from tiny_models import TinyModels, build_gguf

from plush.config import LlamaConfig
from plush.server.llm.base import Message, Prompt
from plush.server.llm.llama import LlamaBackend, _trimmed

SYSTEM = "You are Momo, a happy bear who likes to play and sing.\nOwner: hi\nMomo: hello friend!"
HISTORY = (Message("user", "Hi"), Message("assistant", "Hello!"))


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GGUF with no `tokenizer.chat_template`, as a base model's file is."""
    return build_gguf(tmp_path_factory.mktemp("base") / "base.gguf", chat_template=None)


def load(path: Path, max_tokens: int = 6) -> LlamaBackend:
    return LlamaBackend(path, LlamaConfig(n_ctx=2048, max_tokens=max_tokens, temperature=0.0))


async def collect(backend: LlamaBackend, prompt: Prompt) -> list[str]:
    return [delta async for delta in backend.stream(prompt)]


def evaluated(backend: LlamaBackend) -> list[int]:
    """The tokens in the model's KV cache: the last prompt and what was generated after it."""
    llm = backend._llm
    return [int(t) for t in llm.input_ids[: llm.n_tokens]]


def tokens(backend: LlamaBackend, text: str) -> list[int]:
    """`text` as llama.cpp tokenizes a completion prompt (BOS first)."""
    return [int(t) for t in backend._llm.tokenize(text.encode(), add_bos=True, special=True)]


def test_model_without_chat_template_loads_in_completion_mode_and_says_so(base_gguf: Path) -> None:
    with capture_logs() as logs:
        backend = load(base_gguf)
    assert backend.prompt_mode == "completion"
    loaded = [entry for entry in logs if entry["event"] == "llama_loaded"]
    assert len(loaded) == 1
    assert loaded[0]["mode"] == "completion" and loaded[0]["reason"] == "no chat template"


def test_model_with_chat_template_keeps_chat_mode(models: TinyModels) -> None:
    with capture_logs() as logs:
        backend = load(models.gguf)
    assert backend.prompt_mode == "chat"
    assert [entry["mode"] for entry in logs if entry["event"] == "llama_loaded"] == ["chat"]


async def test_completion_prompt_is_the_transcript_ending_with_the_companion_name(base_gguf: Path) -> None:
    backend = load(base_gguf)
    replies = await collect(backend, Prompt(SYSTEM, HISTORY, "Tell me\na story.", speaker="Momo"))
    expected = f"{SYSTEM}\n\nOwner: Hi\nMomo: Hello!\nOwner: Tell me a story.\nMomo:"
    sent = tokens(backend, expected)
    assert evaluated(backend)[: len(sent)] == sent
    assert "[INST]" not in backend._llm.detokenize(evaluated(backend)).decode()
    assert "".join(replies).strip()


async def test_memory_note_goes_in_the_transcript_as_bracketed_lines_before_the_owners_line(
    base_gguf: Path,
) -> None:
    backend = load(base_gguf)
    note = "[Memory, for you only; do not read it out]\n- My cat is Tom.\n[The owner now says]"
    await collect(backend, Prompt(SYSTEM, HISTORY, "What is my cat called?", note, speaker="Momo"))
    expected = (
        f"{SYSTEM}\n\nOwner: Hi\nMomo: Hello!\n"
        "[Memory, for you only; do not read it out]\n- My cat is Tom.\n[The owner now says]\n"
        "Owner: What is my cat called?\nMomo:"
    )
    sent = tokens(backend, expected)
    assert evaluated(backend)[: len(sent)] == sent


async def test_completion_reply_streams_without_the_space_after_the_speaker_label(base_gguf: Path) -> None:
    backend = load(base_gguf, max_tokens=12)
    deltas = await collect(backend, Prompt(SYSTEM, (), "hello", speaker="Momo"))
    reply = "".join(deltas)
    assert len(deltas) > 1
    assert reply == reply.strip() and reply


async def test_completion_turns_start_with_the_persona_tokens_the_warm_up_evaluated(base_gguf: Path) -> None:
    """llama.cpp reuses the KV cache for the longest common token prefix: the persona must be that prefix."""
    backend = load(base_gguf, max_tokens=4)
    backend.warm_up(SYSTEM)
    warm = evaluated(backend)
    await collect(backend, Prompt(SYSTEM, (), "hello", speaker="Momo"))
    first = evaluated(backend)
    await collect(
        backend, Prompt(SYSTEM, (Message("user", "hello"), Message("assistant", "hi")), "sing a song", speaker="Momo")
    )
    second = evaluated(backend)

    persona = len(tokens(backend, f"{SYSTEM}\n\n"))
    assert persona > 10
    for before, after in ((warm, first), (first, second)):
        shared = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), len(before))
        assert shared >= persona, f"only {shared} of the persona's {persona} tokens were shared"


def test_whitespace_only_completion_streams_nothing_and_inner_whitespace_survives() -> None:
    assert list(_trimmed([" ", "\n", "  "])) == []
    assert "".join(_trimmed([" ", " Hi", " there", "!", " \n"])) == "Hi there!"
