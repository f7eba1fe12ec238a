"""Configuration: one TOML file with commented defaults, environment overrides, secrets kept out of it.

Precedence, highest first: command-line flags (`plush server --host`), the environment (`PLUSH_<SECTION>__<KEY>`,
e.g. `PLUSH_SERVER__PORT=50052`), a `.env` file in the working directory (untracked), the TOML file, the defaults
in `default_config.toml` (which mirrors the models below; a test keeps the two equal). Secrets (`GEMINI_API_KEY`)
come only from the environment or `.env`: a secret in the TOML file is refused, so a config file can be shared or
committed safely.
"""

from __future__ import annotations

import os
import socket
import tomllib
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from plush.errors import ConfigError
from plush.languages import check_language_code
from plush.owners import check_household_name

SECRET_KEYS = (
    "gemini_api_key", "device_token", "device_tokens", "telegram_bot_token", "dashboard_password",
    "dashboard_metrics_token",
)  # fmt: skip
CONFIG_ENV = "PLUSH_CONFIG"


class Section(BaseModel):
    """A config table: unknown keys are errors (a typo must not be silently ignored), values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelsConfig(Section):
    dir: Path | None = None
    """Where downloaded models live; empty means `~/.cache/plush/models` (or `$XDG_CACHE_HOME/plush/models`)."""


class SttConfig(Section):
    model: str = "whisper-base"
    """A model name from `plush models list`, or a path to a CTranslate2 Whisper directory."""
    language: str = "auto"
    """`ko`, `en`, ... or `auto` to detect per utterance."""
    languages: tuple[str, ...] = ("ko", "en")
    """With `language = "auto"`: the languages the owner speaks (Whisper codes). Whisper's detector knows 99 and
    often takes a child's Korean for Japanese; it picks the likeliest of these instead. Empty allows all."""
    compute_type: str = "int8"
    """CTranslate2 compute type: int8 is fastest on a Pi; float16 on CUDA."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    cpu_threads: int = Field(default=0, ge=0)
    """0 lets CTranslate2 choose."""
    beam_size: int = Field(default=1, ge=1)
    """1 (greedy) is fastest; 5 is a little more accurate."""
    max_new_tokens: int = Field(default=128, ge=1, le=440)
    """Upper bound on transcript length, in tokens."""
    no_speech_threshold: float | None = 0.6
    """Segments whose no-speech probability is above this are dropped; empty disables the check."""
    encoder_window: Literal["full", "fit"] = "fit"
    """"fit": encode the utterance and 2 s of silence (at least 6 s) instead of Whisper's whole 30 s window:
    about 5x less work on a CPU for WER 0.5 points above the full window's on spoken questions (bench/README.md).
    A text that repeats itself or outruns the audio is decoded again with the full window. "full": always the
    30 s window, how Whisper was trained."""
    streaming: bool = True
    """On the plush: decode each pause-closed stretch of speech while the button is still held, so at release
    only the last one is left (voice activity detection with Silero VAD, which ships with faster-whisper)."""
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    """Speech probability above which audio counts as speech."""
    min_silence_ms: int = Field(default=400, ge=100, le=5000)
    """A pause this long ends a stretch of speech, which is then decoded at once."""

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        return value if value == "auto" else check_language_code(value)

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(check_language_code(code) for code in value))


class TtsConfig(Section):
    voice: str = "piper-en-joe-medium"
    """A voice name from `plush models list`, or a path to a Piper `.onnx` (with its `.onnx.json` beside it)."""
    voices: dict[str, str] = Field(default_factory=dict)
    """A voice per language, before `voice`: `{ ko = "/models/ko.onnx", en = "piper-en-joe-medium" }`; a name,
    a path, or "espeak-ng" (the built-in fallback). Hangul with no Korean voice set goes to espeak-ng `ko`."""
    length_scale: float | None = Field(default=None, gt=0)
    """Speaking rate: above 1 is slower; empty keeps the voice's own setting."""
    chunk_ms: int = Field(default=100, ge=10, le=1000)
    """Size of the audio chunks streamed back to the device."""


SafetyThreshold = Literal["BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"]


class GeminiConfig(Section):
    model: str = "gemini-flash-latest"
    temperature: float = Field(default=0.8, ge=0, le=2)
    max_output_tokens: int = Field(default=300, ge=1)
    thinking_level: Literal["minimal", "low", "medium", "high"] | None = None
    """Thinking effort for models that take one (Gemini 3); unset leaves the model's default."""
    safety_threshold: SafetyThreshold = "BLOCK_LOW_AND_ABOVE"
    """Applied to harassment, hate, sexual and dangerous content; the strictest fits a child's toy."""
    timeout_s: float = Field(default=20.0, gt=0)
    base_url: str | None = None
    """Only for tests and proxies: where the Gemini API is (default: Google's)."""
    requests_per_minute: int = Field(default=10, ge=0)
    """Free-tier budgets, checked before each call so a spent budget costs no request; 0 means no limit."""
    tokens_per_minute: int = Field(default=250_000, ge=0)
    requests_per_day: int = Field(default=20, ge=0)
    """Counted per Pacific day (Google resets at midnight Pacific) and kept across restarts."""
    client_share: float = Field(default=0.6, gt=0, le=1)
    """Most of each budget one client (a plush, a Telegram user) may use, so none starves the others."""
    failures_to_open: int = Field(default=2, ge=1)
    """Errors in a row (5xx, timeouts, broken streams) that stop Gemini calls for a while."""
    backoff_s: float = Field(default=10.0, gt=0)
    """First pause after Gemini fails; it doubles on each further failure, up to max_backoff_s."""
    max_backoff_s: float = Field(default=300.0, gt=0)


class LlamaConfig(Section):
    model: str = "auto"
    """"auto" (the best local model downloaded: Qwen2.5 1.5B, then 0.5B, then the starter brain), a model name
    from `plush models list`, or a path to a GGUF model."""
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int = Field(default=0, ge=0)
    """0 uses all cores."""
    n_gpu_layers: int = 0
    """Layers to offload to a GPU (Jetson, CUDA build); -1 offloads all."""
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int = Field(default=300, ge=1)
    seed: int = 0
    max_queue: int = Field(default=2, ge=0)
    """Turns that may wait for the model while it answers another; one more gets a quick "busy" error."""
    extra_buffers: Literal["auto", "on", "off"] = "auto"
    """llama.cpp's extra buffer types (repacked weights, AMX). "auto": off where llama.cpp uses AMX (Intel CPUs
    with AMX, where they crash llama-cpp-python 0.3.36), on elsewhere."""
    restart_backoff_s: float = Field(default=1.0, gt=0)
    """The local brain runs in a worker process; after a crash it restarts at once, then after this many seconds,
    doubling, for crashes in a row."""
    crashes_before_pause: int = Field(default=3, ge=1)
    """Crashes in a row (without an answer between them) that open the breaker: no restart for a while."""
    pause_s: float = Field(default=60.0, gt=0)
    """How long the breaker stays open at first; it doubles each time it opens again, up to ten minutes."""
    start_timeout_s: float = Field(default=120.0, gt=0)
    """How long the worker may take to load the model and evaluate the persona before it counts as failed."""
    stall_s: float = Field(default=30.0, gt=0)
    """How long a running generation may go without a token (its prompt's evaluation included) before its worker
    counts as stalled: it is killed and restarted, and the turn gets the persona's fallback line. Raise it for a
    slow board that reads long prompts."""


class LlmConfig(Section):
    backend: Literal["auto", "gemini", "llama"] = "auto"
    """auto: Gemini when GEMINI_API_KEY is set, local Llama otherwise and when Gemini fails."""
    gemini: GeminiConfig = GeminiConfig()
    llama: LlamaConfig = LlamaConfig()


class MemoryConfig(Section):
    history_turns: int = Field(default=6, ge=0, le=100)
    """How many recent turns of the conversation go into the prompt (its window)."""
    recall_turns: int = Field(default=3, ge=0, le=20)
    """Older turns found by their words (full-text search) that may join the prompt; 0 turns recall off."""
    recall_scope: Literal["conversation", "all"] = "conversation"
    """Recall from the same conversation only, or from every conversation of the same owner (see [owners])."""
    max_tokens: int = Field(default=600, ge=0)
    """Prompt budget for each of: the window (the newest of its turns that fit), and long-term facts with recalled
    turns together (facts first)."""
    remember_phrases: bool = True
    """Store a fact when the owner says "remember that ..." / "... 기억해 줘"."""
    retention_days: int = Field(default=0, ge=0)
    """Delete turns older than this many days, with their kept audio (facts stay); 0 keeps every turn."""


class ServerConfig(Section):
    host: str = "127.0.0.1"
    """Use 0.0.0.0 to let a plush on the network reach the server (pair it first: `plush pair add NAME`)."""
    port: int = Field(default=50051, ge=0, le=65535)
    persona: str = "en"
    """A built-in persona (`en`, `ko`) or a path to a persona TOML file."""
    database: str | None = None
    """Where turns, memory and pairings live: a SQLite file (empty: `~/.local/share/plush/plush.db`), or a
    PostgreSQL URL (`postgresql://plush@db.example:5432/plush`, `pip install 'plush[postgres]'`) that several
    replicas share; its password from PGPASSWORD or ~/.pgpass rather than the URL (asyncpg reads both)."""
    data_dir: Path | None = None
    """Folder for the server's own files (TLS certificate, dashboard password, kept turn audio, edited personas);
    empty: beside the SQLite file, or the per-user data folder (`~/.local/share/plush`) with PostgreSQL."""
    max_audio_seconds: float = Field(default=30.0, gt=0)
    """Longest utterance the server accepts from a device."""
    max_message_mb: float = Field(default=4.0, gt=0)
    """gRPC message size limit, both directions."""
    idle_timeout_s: float = Field(default=10.0, gt=0)
    """A Converse stream that sends nothing for this long before TurnEnd is ended (DEADLINE_EXCEEDED) and its
    turn stored as abandoned; a plush streaming audio sends some every 40 ms."""
    max_turns_in_flight: int = Field(default=16, ge=1)
    """Turns (spoken and text) the server works on at once; one more is refused at once (RESOURCE_EXHAUSTED)."""
    max_stt_in_flight: int = Field(default=4, ge=1)
    """Utterances the server transcribes (or holds audio for) at once; one more spoken turn is refused at once."""
    max_speculations: int = Field(default=2, ge=0)
    """Times a turn may start the brain on the plush's settled text before the button is let go (0: never);
    one at a time, each a Gemini request when Gemini answers (see plush/server/speculation.py)."""
    stt_on_server: bool = True
    """Load a Whisper model on the server so devices may stream audio instead of a transcript."""
    stt_model: str | None = None
    """Whisper for server-side STT, if not [stt] model: the server can afford a bigger one (whisper-small)."""
    tls: Literal["auto", "on", "off"] = "auto"
    """"auto": TLS when listening beyond this computer or once a plush is paired, plain on 127.0.0.1 (the
    one-computer setup); "on": always; "off": never (only behind a TLS proxy or a VPN)."""
    tls_names: tuple[str, ...] = ()
    """Extra host names or IP addresses for the certificate made at first start (it always names localhost,
    127.0.0.1 and this computer's host name; paired plushes need none of them)."""
    allow_open: bool = False
    """Listen beyond this computer even with no paired plush and no PLUSH_DEVICE_TOKENS (anyone may talk)."""
    redis: str | None = None
    """redis://host:6379/0 for the state several replicas share (Gemini budgets, logins, presence, the live
    log, the Telegram poller); unset keeps it in this process (one server)."""

    @field_validator("database", mode="before")
    @classmethod
    def _file_or_postgres_url(cls, value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            return value
        value = value.strip()
        if "://" in value:
            check_database_url(value)
        return value or None

    def database_url(self) -> str | None:
        """The PostgreSQL URL in `database`, or None for SQLite."""
        return self.database if self.database and "://" in self.database else None

    def database_location(self) -> str:
        """What `Store.open` opens: the PostgreSQL URL, or the SQLite file's path."""
        return self.database_url() or str(self.database_path())

    def database_path(self) -> Path:
        """The SQLite file in use: `database`, or the per-user data folder (ConfigError with a PostgreSQL URL)."""
        if self.database_url():
            raise ConfigError(f"[server] database is a PostgreSQL database ({hide_password(self.database or '')})")
        return Path(self.database) if self.database else data_home() / "plush.db"

    def data_folder(self) -> Path:
        """Where the server keeps its own files: `data_dir`; else beside the SQLite file, as always, so a home's
        certificate and password stay where they were; with PostgreSQL the per-user data folder, which every
        replica on one computer shares (on several computers, set it to one shared or copied folder)."""
        if self.data_dir is not None:
            return self.data_dir
        return data_home() if self.database_url() else self.database_path().parent


DATABASE_SCHEMES = ("postgresql", "postgres")


def check_database_url(url: str) -> None:
    """ValueError unless `url` is a PostgreSQL URL asyncpg can read (the message never shows its password)."""
    shown = hide_password(url)
    parts = urlsplit(url)
    if parts.scheme.lower() not in DATABASE_SCHEMES:
        raise ValueError(
            f"{shown}: not a database Plush knows; give a SQLite file path or a postgresql://user@host:5432/db URL"
        )
    try:
        parts.port  # noqa: B018 - urllib checks the port only when asked
    except ValueError as exc:
        raise ValueError(f"{shown}: the port is not a number from 1 to 65535") from exc
    if parts.path.count("/") > 1:
        raise ValueError(f"{shown}: the database name is one word after the host (postgresql://host:5432/plush)")


def hide_password(url: str) -> str:
    """A database URL with its password, if any, shown as ****."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:****@{host}"


class DeviceConfig(Section):
    server: str = "127.0.0.1:50051"
    """host:port of the Plush server; on a paired plush this default means the paired server's address."""
    id: str = Field(default_factory=socket.gethostname)
    """This plush's name in the server's logs and memory; defaults to the host name."""
    button: Literal["keyboard", "serial", "gpio"] = "keyboard"
    """The button and lights: "serial" (the paw board over USB), "gpio" (a button on the Pi's pins), "keyboard"."""
    serial_port: str | None = None
    """The paw board's port (/dev/ttyACM0); empty finds it by its USB vendor (RP2040, Arduino, CH340 ...)."""
    gpio_button_pin: int = Field(default=17, ge=0, le=27)
    """BCM number of the GPIO pin the button pulls to ground."""
    gpio_led_pin: int | None = Field(default=27, ge=0, le=27)
    """BCM number of a (PWM-capable) status LED's pin; empty for none."""
    stt: Literal["device", "server"] = "device"
    """Where speech is transcribed: on the plush, or on the server (bigger model, needs the network)."""
    speculate: bool = True
    """With streaming STT on the plush: tell the server what was heard each time it settles while the button is
    held, so the answer can be on its way at release (`[server] max_speculations`). Needs a server that knows
    the Settled message (this version or newer); false: the turn opens at release, as before."""
    sample_rate: int = 16000
    """Microphone rate; Whisper wants 16 kHz."""
    input_device: str | None = None
    """sounddevice input device name or index; empty means the system default."""
    output_device: str | None = None
    volume: float = Field(default=1.0, ge=0, le=2)
    """Loudness of everything the plush says: 0.5 is half, 1.0 as the voice speaks, up to 2.0."""
    audio_encoding: Literal["pcm", "opus"] = "pcm"
    """How the reply's audio travels: "pcm" (simplest), or "opus" (a tenth of the bytes, for weak Wi-Fi)."""
    prebuffer_ms: int = Field(default=80, ge=0, le=2000)
    """Reply audio buffered before playback starts (and again after a network stall), so words are not cut."""
    max_record_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)


class HouseholdConfig(Section):
    """A household (`[owners.NAME]`): its plushes and Telegram users share the facts they are told and recall.

    A plush in no household is its own owner, so nothing is shared between plushes unless they are listed here.
    """

    devices: tuple[str, ...] = ()
    """Device ids as the server sees them: each plush's `[device] id` (and a text client's, to share with it)."""
    telegram_users: tuple[int, ...] = ()
    """Telegram user ids whose chats belong to this household."""


class TelegramConfig(Section):
    """The Telegram bridge (in `plush server` when TELEGRAM_BOT_TOKEN is set): who may talk there, and how.
    Private by default."""

    enabled: bool = True
    """Run the bot inside `plush server` when TELEGRAM_BOT_TOKEN is set; false keeps the server to itself."""
    allowed_users: tuple[int, ...] = ()
    """Telegram user ids the bot answers; empty answers nobody (a stranger's id is logged once, to add here)."""
    conversations: dict[int, str] = Field(default_factory=dict)
    """Telegram user id -> the plush (its `[device] id`) whose conversation and facts that user shares. A user in
    a household with exactly one plush shares that plush's without this; anyone else has a chat of their own."""
    allow_groups: bool = False
    """Answer allowed users in group chats too (each group is a conversation of its own); off: only private chats."""
    rate_limit: str = "8/minute"
    """Messages one user may send before the bot asks them to slow down (a `limits` string: "8/minute",
    "100/day"); the ones over it get no LLM call."""
    replies: Literal["auto", "text", "voice", "both"] = "auto"
    """How the bot answers until a chat picks with /voice: "auto" answers a voice note with a voice note and text
    with text."""
    max_voice_seconds: float = Field(default=120.0, gt=0, le=600)
    """Longest voice note the bot listens to; a longer one gets a polite refusal."""
    keep_voice_notes: bool = False
    """Keep the voice notes owners send (under the data folder, telegram/voice_notes/<user id>/), for
    `plush voice import --telegram` to build a voice from them."""
    api_url: str = "https://api.telegram.org/bot"
    """The Bot API's base URL (the token is appended); change it only for a self-hosted Bot API server."""
    webhook_url: str = ""
    """Empty: long polling (works behind any router). A public https URL: Telegram pushes updates there instead;
    the bot listens on `webhook_listen`:`webhook_port` behind your TLS proxy."""
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=0, le=65535)

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        try:
            from limits import parse_many
        except ImportError:  # a plush without the server's packages never runs the bot
            return value
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '8/minute' or '100/day': {exc}") from exc
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_https(cls, value: str) -> str:
        if value and not value.startswith("https://"):
            raise ValueError("Telegram only pushes to https:// URLs (leave it empty for long polling)")
        return value


class DashboardConfig(Section):
    """The web dashboard that `plush server` serves: every turn live, charts, devices, memory, persona. Every page
    and API call needs a login (`plush dashboard set-password`)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    """Where it listens. Beyond this computer, put it behind an HTTPS reverse proxy (the login is a password)."""
    port: int = Field(default=8765, ge=0, le=65535)
    password_file: Path | None = None
    """The login's argon2 hash (`plush dashboard set-password` writes it); empty: `dashboard-password` in the
    server's data folder (`[server] data_dir`). PLUSH_DASHBOARD_PASSWORD in the environment or .env is used
    instead when set."""
    session_hours: float = Field(default=12.0, gt=0)
    """How long a login lasts (a server restart ends every login)."""
    login_delay_s: float = Field(default=1.0, ge=0)
    """A failed login waits this long, doubled for each earlier failure from the same address (at most 30 s)."""
    online_window_s: float = Field(default=300.0, gt=0)
    """A plush counts as online while a call is open or for this long after its last one."""
    keep_audio: bool = False
    """Keep each reply's audio (WAV files in the server's data folder, turn-audio/) to play back in the turn's detail;
    deleted with its turn (`[memory] retention_days`)."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses of the reverse proxies in front (e.g. ["127.0.0.1"]): their X-Forwarded-For and -Proto name the
    real client, for the login throttle, /metrics' this-computer rule and `cookie_secure`. Empty: none."""
    cookie_secure: Literal["auto", "on", "off"] = "auto"
    """The login cookie's Secure flag. auto: when the request came over HTTPS (as a trusted proxy says)."""


class PlushConfig(BaseSettings):
    """The whole configuration; see `default_config.toml` for every key with its comment."""

    model_config = SettingsConfigDict(
        env_prefix="PLUSH_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    log_level: str = "INFO"
    models: ModelsConfig = ModelsConfig()
    stt: SttConfig = SttConfig()
    tts: TtsConfig = TtsConfig()
    llm: LlmConfig = LlmConfig()
    memory: MemoryConfig = MemoryConfig()
    server: ServerConfig = ServerConfig()
    device: DeviceConfig = DeviceConfig()
    telegram: TelegramConfig = TelegramConfig()
    dashboard: DashboardConfig = DashboardConfig()
    owners: dict[str, HouseholdConfig] = Field(default_factory=dict)
    """Households by name; see `HouseholdConfig`. A device or Telegram user may be in one household at most."""
    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GEMINI_API_KEY", "PLUSH_GEMINI_API_KEY")
    )
    """Secret: from the environment or .env only."""
    device_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("PLUSH_DEVICE_TOKEN"))
    """Secret, on a plush: the token it shows the server (gRPC metadata `authorization: Bearer <token>`)."""
    device_tokens: SecretStr | None = Field(default=None, validation_alias=AliasChoices("PLUSH_DEVICE_TOKENS"))
    """Secret, on the server: `id=token,id=token` for every plush (and chat client) allowed to talk to it.
    Unset, and no plush paired (`plush pair add`): any client may (fine on 127.0.0.1 only)."""
    telegram_bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TELEGRAM_BOT_TOKEN", "PLUSH_TELEGRAM_BOT_TOKEN")
    )
    """Secret: the Telegram bot's token (from @BotFather), from the environment or .env only."""
    dashboard_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PLUSH_DASHBOARD_PASSWORD")
    )
    """Secret: the dashboard's password, when not set with `plush dashboard set-password` (only a hash is kept)."""
    dashboard_metrics_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PLUSH_DASHBOARD_METRICS_TOKEN")
    )
    """Secret: Prometheus scrapes /metrics with `Authorization: Bearer <token>`; unset, only this computer may."""

    @field_validator("owners")
    @classmethod
    def _one_household_each(cls, value: dict[str, HouseholdConfig]) -> dict[str, HouseholdConfig]:
        # Two households claiming one plush would make its owner a matter of chance.
        homes: dict[str | int, str] = {}
        for name, house in value.items():
            check_household_name(name)
            members: tuple[str | int, ...] = (*house.devices, *house.telegram_users)
            for member in members:
                if member in homes:
                    raise ValueError(f"'{member}' is in two households ({homes[member]}, {name}); keep it in one")
                homes[member] = name
        return value

    def token(self) -> str | None:
        """This plush's token, if one is set."""
        return self.device_token.get_secret_value() if self.device_token else None

    def allowed_devices(self) -> dict[str, str]:
        """device id -> token from `device_tokens` (empty: no token needed)."""
        if self.device_tokens is None:
            return {}
        pairs = [item.strip() for item in self.device_tokens.get_secret_value().split(",") if item.strip()]
        tokens: dict[str, str] = {}
        for pair in pairs:
            device, sep, token = pair.partition("=")
            if not sep or not device.strip() or not token.strip():
                raise ConfigError("PLUSH_DEVICE_TOKENS must look like 'plush-livingroom=TOKEN,kitchen=TOKEN2'")
            tokens[device.strip()] = token.strip()
        return tokens

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags arrive as init kwargs and win; the TOML file comes last, under the environment.
        return init_settings, env_settings, dotenv_settings, _FileSource(settings_cls)


_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("plush_config_file", default=None)
"""The TOML file's values while `load_config` builds a config from them."""


class _FileSource(PydanticBaseSettingsSource):
    """The config file, as the lowest source above the defaults."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get() or {})


def default_config_text() -> str:
    """The commented default configuration, as shipped (what `plush config init` writes)."""
    return resources.files("plush").joinpath("default_config.toml").read_text(encoding="utf-8")


def find_config_file(explicit: Path | None = None) -> Path | None:
    """The config file to use: `--config`, `$PLUSH_CONFIG`, `./plush.toml`, `~/.config/plush/plush.toml`."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file not found: {explicit}")
        return explicit
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (from ${CONFIG_ENV})")
        return path
    for candidate in (Path("plush.toml"), user_config_path()):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    for key in SECRET_KEYS:
        if key in data or key.upper() in data:
            raise ConfigError(
                f"{path}: '{key}' is a secret and is not read from the config file; "
                f"set the environment variable {key.upper()} or put it in an untracked .env file"
            )
    known = set(PlushConfig.model_fields) - set(SECRET_KEYS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (known top-level keys: {', '.join(sorted(known))})")
    return data


def _describe(exc: ValidationError, source: str) -> ConfigError:
    """Turn pydantic's report into one line per problem that names the dotted key."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        shown = err["input"]
        if isinstance(shown, str) and "://" in shown:  # a database URL may carry its password
            shown = hide_password(shown)
        lines.append(f"{source}: '{key}': {err['msg']}" + (f" (got {shown!r})" if err["type"] != "missing" else ""))
    return ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def load_config(path: Path | None = None, *, search: bool = True, **overrides: Any) -> PlushConfig:
    """Load the effective configuration.

    `path` is an explicit file; with `search` the usual places are tried when it is None. `overrides` are
    top-level sections given as dicts (command-line flags, tests): they win over the environment, which wins over
    the file (a flag the environment silently beat was once ignored without a word).
    """
    file = find_config_file(path) if (path is not None or search) else None
    reset = _FILE_VALUES.set(_read_toml(file) if file else {})
    try:
        return PlushConfig(**overrides)
    except ValidationError as exc:
        raise _describe(exc, str(file) if file else "configuration") from exc
    finally:
        _FILE_VALUES.reset(reset)


def masked(config: PlushConfig) -> dict[str, Any]:
    """The effective config as plain data with secrets masked, for `plush config show`."""
    data = config.model_dump(mode="json", exclude_none=False)
    if config.server.database:
        data["server"]["database"] = hide_password(config.server.database)
    for key in SECRET_KEYS:
        value = getattr(config, key)
        if value is None:
            data[key] = "(not set)"
        elif key == "device_tokens":  # a list of tokens: its tail would be the last one's
            data[key] = f"**** ({len(config.allowed_devices())} devices)"
        else:
            data[key] = "****" + value.get_secret_value()[-4:]
    return data


def user_config_path() -> Path:
    """The per-user config file (`~/.config/plush/plush.toml`, following XDG), whether or not it exists."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "plush" / "plush.toml"


def data_home() -> Path:
    """Per-user data folder (database) following XDG."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "plush"


def cache_home() -> Path:
    """Per-user cache folder (models) following XDG."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "plush"
