"""The fake Bot API speaks the real protocol: python-telegram-bot's own `Bot` fetches voice notes and audio files
from it, uploads voice notes to it, sees group chats, and meets its outages the way it meets Telegram's."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator

import pytest
from fakes.telegram import FakeTelegram
from telegram import Bot, Message
from telegram.error import BadRequest, NetworkError

USER = 111
GROUP = -100123
VOICE = b"OggS" + bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"
"""Bytes that would break a careless multipart parser or a text decoder."""


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url) as client:
        yield client


def seconds(duration: int | dt.timedelta) -> float:
    """A duration as PTB 22.8 gives it: int by default, a timedelta with PTB_TIMEDELTA set."""
    return duration.total_seconds() if isinstance(duration, dt.timedelta) else duration


async def only_message(bot: Bot) -> Message:
    [update] = await bot.get_updates(timeout=0)
    assert update.message is not None
    return update.message


async def test_a_voice_note_is_found_with_get_file_and_downloaded_byte_for_byte(fake: FakeTelegram, bot: Bot) -> None:
    fake.send_voice(USER, VOICE, duration=4)
    message = await only_message(bot)
    assert message.voice is not None
    assert (seconds(message.voice.duration), message.voice.mime_type, message.voice.file_size) == (
        4,
        "audio/ogg",
        len(VOICE),
    )
    file = await message.voice.get_file()
    assert file.file_path is not None and file.file_path.startswith(f"{fake.base_file_url}{fake.token}/voice/")
    assert file.file_size == len(VOICE)
    assert bytes(await file.download_as_bytearray()) == VOICE
    assert fake.downloads == [file.file_path.rsplit(f"{fake.token}/", 1)[1]]


@pytest.mark.parametrize("kind", ["document", "audio"])
async def test_an_audio_file_arrives_with_its_name_and_type(fake: FakeTelegram, bot: Bot, kind: str) -> None:
    fake.send_audio_file(USER, b"ID3 fake mp3", file_name="song.mp3", kind=kind, caption="listen")  # type: ignore[arg-type]
    message = await only_message(bot)
    attachment = message.document if kind == "document" else message.audio
    assert attachment is not None
    assert (attachment.file_name, attachment.mime_type, message.caption) == ("song.mp3", "audio/mpeg", "listen")
    assert bytes(await (await attachment.get_file()).download_as_bytearray()) == b"ID3 fake mp3"


async def test_a_file_over_20_mb_is_refused_by_get_file_and_never_downloaded(fake: FakeTelegram, bot: Bot) -> None:
    fake.send_voice(USER, VOICE, duration=1500, file_size=25 * 1024 * 1024)
    message = await only_message(bot)
    assert message.voice is not None and message.voice.file_size == 25 * 1024 * 1024
    with pytest.raises(BadRequest, match="too big"):
        await message.voice.get_file()
    with pytest.raises(BadRequest, match=r"(?i)wrong file_id"):
        await bot.get_file("no-such-file")
    assert fake.downloads == []


async def test_send_voice_uploads_the_bytes_and_returns_a_voice_message(fake: FakeTelegram, bot: Bot) -> None:
    fake.send_text(USER, "say something")
    asked = await only_message(bot)
    sent = await bot.send_voice(USER, VOICE, duration=3, caption="42", reply_to_message_id=asked.message_id)
    assert sent.voice is not None and seconds(sent.voice.duration) == 3
    assert sent.caption == "42" and sent.reply_to_message is not None
    [voice] = fake.voices_to(USER)
    assert (voice.data, voice.duration, voice.caption, voice.reply_to) == (VOICE, 3, "42", asked.message_id)
    assert voice.message_id == sent.message_id
    assert bytes(await (await bot.get_file(sent.voice.file_id)).download_as_bytearray()) == VOICE
    assert fake.texts_to(USER) == [], "a voice note is not a text message"


async def test_group_messages_carry_the_group_and_replies_go_to_it(fake: FakeTelegram, bot: Bot) -> None:
    fake.send_text(USER, "/start@plush_test_bot", chat_id=GROUP, chat_type="group", title="Family")
    fake.send_voice(USER, VOICE, duration=2, chat_id=GROUP, chat_type="supergroup", title="Family")
    text, voice = [update.message for update in await bot.get_updates(timeout=0)]
    assert text is not None and voice is not None
    assert (text.chat.id, text.chat.type, text.chat.title) == (GROUP, "group", "Family")
    assert text.from_user is not None and text.from_user.id == USER
    assert text.entities[0].length == len("/start@plush_test_bot")
    assert (voice.chat.type, voice.voice is not None) == ("supergroup", True)
    reply = await bot.send_message(GROUP, "hello family")
    assert (reply.chat.id, reply.chat.type) == (GROUP, "supergroup")
    assert fake.texts_to(GROUP) == ["hello family"]


async def test_get_me_fails_during_an_outage_and_works_after_it(fake: FakeTelegram) -> None:
    fake.fail_for("getMe", 502)
    bot = Bot(fake.token, base_url=fake.base_url)
    with pytest.raises(NetworkError):
        await bot.initialize()
    fake.recover("getMe")
    async with bot:
        assert bot.username == "plush_test_bot"


async def test_a_refused_connection_is_a_network_error_until_the_fake_listens_again(
    fake: FakeTelegram, bot: Bot
) -> None:
    port = fake.port
    fake.refuse_connections()
    with pytest.raises(NetworkError):
        await bot.get_updates(timeout=0)
    fake.accept_connections()
    assert fake.port == port
    assert await bot.get_updates(timeout=0) == ()
    fake.fail_for("getUpdates", 502)
    with pytest.raises(NetworkError):
        await bot.get_updates(timeout=0)
    fake.recover()
    fake.refuse_connections(seconds=0.3)
    await asyncio.sleep(0.5)
    assert await bot.get_updates(timeout=0) == ()
