"""Proves that FakeGemini speaks the wire protocol the real google-genai client expects.

If these fail after an SDK upgrade, the fake (not Plush) needs updating first: every cloud-brain test
relies on the fake answering exactly like the real API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import pytest
from fakes.gemini import FakeGemini
from google import genai
from google.genai import errors, types

from plush.server.llm.gemini import http_options

MODEL = "gemini-flash-latest"
PERSONA = "You are Plush."


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    """One server per module keeps the tests fast; each test clears its script and log."""
    with FakeGemini() as server:
        yield server


@pytest.fixture
def gemini(fake: FakeGemini) -> genai.Client:
    fake.clear()
    fake.set_default_reply("default answer")
    return genai.Client(api_key="test-key", http_options=http_options(fake.base_url, 30))


def _config() -> types.GenerateContentConfig:
    return types.GenerateContentConfig(system_instruction=PERSONA, temperature=0.5)


def _history() -> list[types.Content]:
    return [
        types.Content(role="user", parts=[types.Part(text="Hi Plush!")]),
        types.Content(role="model", parts=[types.Part(text="Hi friend!")]),
        types.Content(role="user", parts=[types.Part(text="Tell me a story.")]),
    ]


async def _stream_texts(client: genai.Client, **kwargs: object) -> list[types.GenerateContentResponse]:
    stream = await client.aio.models.generate_content_stream(
        model=MODEL, contents=_history(), config=_config(), **kwargs
    )
    return [chunk async for chunk in stream]


@pytest.mark.asyncio
async def test_stream_delivers_scripted_pieces_and_records_request(fake: FakeGemini, gemini: genai.Client) -> None:
    fake.reply("Hello there. ", "How are you?")

    chunks = await _stream_texts(gemini)

    assert [c.text for c in chunks] == ["Hello there. ", "How are you?"]
    assert chunks[-1].candidates is not None
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.total_token_count
    (request,) = fake.requests
    assert request.path == f"/v1/models/{MODEL}:streamGenerateContent?alt=sse"
    assert request.streaming
    assert request.model == MODEL
    assert request.api_key == "test-key"
    assert request.headers["x-goog-api-key"] == "test-key"
    assert request.system_instruction == PERSONA
    assert request.body["systemInstruction"] == {"parts": [{"text": PERSONA}], "role": "user"}
    assert request.turns == [("user", "Hi Plush!"), ("model", "Hi friend!"), ("user", "Tell me a story.")]
    assert request.generation_config == {"temperature": 0.5}


@pytest.mark.asyncio
async def test_quota_error_surfaces_as_client_error_with_retry_delay(fake: FakeGemini, gemini: genai.Client) -> None:
    fake.fail(429, retry_delay="53s")

    with pytest.raises(errors.ClientError) as caught:
        await _stream_texts(gemini)

    err = caught.value
    assert err.code == 429
    assert err.status == "RESOURCE_EXHAUSTED"
    # The SDK keeps the whole error body in .details; it does not parse RetryInfo itself.
    retry = [d for d in err.details["error"]["details"] if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "53s"}]
    assert len(fake.requests) == 1, "google-genai must not retry on its own by default"


def test_sync_generate_content_and_server_error(fake: FakeGemini, gemini: genai.Client) -> None:
    fake.reply("One ", "two.")
    fake.fail(500)

    response = gemini.models.generate_content(model=MODEL, contents="count", config=_config())
    assert response.text == "One two."
    assert fake.last_request.path == f"/v1/models/{MODEL}:generateContent"

    with pytest.raises(errors.ServerError) as caught:
        gemini.models.generate_content(model=MODEL, contents="again")
    assert caught.value.code == 500
    assert caught.value.status == "INTERNAL"


@pytest.mark.asyncio
async def test_v1beta_path_and_default_reply(fake: FakeGemini) -> None:
    client = genai.Client(
        api_key="test-key", http_options=types.HttpOptions(base_url=fake.base_url, api_version="v1beta")
    )
    fake.clear()

    chunks = await _stream_texts(client)

    assert "".join(c.text or "" for c in chunks) == "default answer"
    assert fake.last_request.api_version == "v1beta"


@pytest.mark.asyncio
async def test_safety_block_has_no_text(fake: FakeGemini, gemini: genai.Client) -> None:
    fake.block_safety()
    fake.block_safety(prompt_blocked=True)

    (chunk,) = await _stream_texts(gemini)
    assert chunk.text is None
    assert chunk.candidates is not None
    assert chunk.candidates[0].finish_reason == types.FinishReason.SAFETY

    (chunk,) = await _stream_texts(gemini)
    assert chunk.candidates is None
    assert chunk.prompt_feedback is not None
    assert chunk.prompt_feedback.block_reason == types.BlockedReason.SAFETY


@pytest.mark.asyncio
async def test_cut_stream_raises_transport_error_after_first_chunk(fake: FakeGemini, gemini: genai.Client) -> None:
    fake.cut_stream("Hello")
    received: list[str | None] = []

    stream = await gemini.aio.models.generate_content_stream(model=MODEL, contents="hi", config=_config())
    # google-genai 3.x uses httpx2, and does not wrap transport errors in errors.APIError.
    with pytest.raises(httpx2.RemoteProtocolError):
        async for chunk in stream:
            received.append(chunk.text)

    assert received == ["Hello"]


@pytest.mark.asyncio
async def test_hang_triggers_client_timeout(fake: FakeGemini) -> None:
    # HttpOptions.timeout is in milliseconds.
    client = genai.Client(api_key="test-key", http_options=http_options(fake.base_url, 0.2))
    fake.hang(5)
    started = time.monotonic()

    with pytest.raises(httpx2.TimeoutException):
        await _stream_texts(client)

    assert time.monotonic() - started < 2


@pytest.mark.asyncio
async def test_chunk_delay_spaces_out_chunks(fake: FakeGemini, gemini: genai.Client) -> None:
    fake.reply("First. ", "Second.", chunk_delay=0.2)
    stream = await gemini.aio.models.generate_content_stream(model=MODEL, contents="hi", config=_config())
    arrivals: list[float] = []
    started = time.monotonic()

    async for _chunk in stream:
        arrivals.append(time.monotonic() - started)

    assert len(arrivals) == 2
    assert arrivals[0] < 0.15 <= arrivals[1]
