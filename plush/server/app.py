"""Build the server from the configuration and run it: models, brain, store, gRPC with health and reflection.

Models load in worker threads before the port opens, and health reports SERVING only once everything is
ready, so a plush that connects early waits instead of failing a turn.
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from plush import local_server
from plush.config import PlushConfig, ServerConfig
from plush.errors import PlushError
from plush.logs import get_logger
from plush.owners import Owners
from plush.protos.plush.v1 import companion_pb2 as pb
from plush.server.auth import DeviceTokenInterceptor
from plush.server.certificate import load_or_create
from plush.server.companion import Companion
from plush.server.dashboard import Presence, start_dashboard
from plush.server.in_flight import TurnsInFlight
from plush.server.llm.base import LlmBackend, LlmError
from plush.server.llm.gemini_budget import GeminiBudget
from plush.server.llm.llama_process import LlamaProcess
from plush.server.llm.router import LlmRouter
from plush.server.memory import Memory
from plush.server.paired_plushes import REFRESH_S, PairedPlushes, paired_file
from plush.server.persona import PersonaSource
from plush.server.refusals import DRAIN_LIMIT_S
from plush.server.replica_sharing import ReplicaSharing, presence_and_sharing
from plush.server.retention import Retention, audio_dir
from plush.server.service import CompanionService, Limits, add_to_server
from plush.server.shared_state import SharedState
from plush.server.speech import SpeechOut, VoiceSwitch, speaks
from plush.server.store import Store
from plush.server.transport import choose_transport
from plush.voice_models.cloning.voice_store import VoiceStore
from plush.voice_models.espeak_voice import BUILTIN, EspeakVoice
from plush.voice_models.model_store import KNOWN_MODELS, STARTER_BRAIN_HINT, ModelStore
from plush.voice_models.streaming_stt import StreamingStt
from plush.voice_models.stt import Transcriber
from plush.voice_models.tts import Synthesizer, Voice

if TYPE_CHECKING:
    from plush.server.dashboard.runner import Dashboard

log = get_logger(__name__)
HOUSEKEEPING_S = 3600.0
REVOCATION_CHECK_S = REFRESH_S
"""How soon a turn in flight stops once its plush is unpaired (`plush pair remove`, on any replica's machine)."""
SIGNALS = (signal.SIGINT, signal.SIGTERM)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Companion"].full_name


def build_router(config: PlushConfig, store: Store, shared: SharedState | None = None) -> LlmRouter:
    """Gemini (behind its free-tier budget, shared by the replicas on `shared`) when a key is set and allowed,
    the local Llama when loadable."""
    llm = config.llm
    primary: LlmBackend | None = None
    fallback: LlmBackend | None = None
    local = ""
    key = config.gemini_api_key.get_secret_value() if config.gemini_api_key else ""
    if llm.backend in ("auto", "gemini") and key:
        from plush.server.llm.gemini import GeminiBackend

        primary = GeminiBackend(key, llm.gemini)
    if llm.backend in ("auto", "llama"):
        try:
            models = ModelStore.from_config(config.models)
            local = models.name_for(llm.llama.model, "llm")
            fallback = LlamaProcess(models.resolve(local, "llm"), llm.llama)  # started by `start_local_brain`
            known = KNOWN_MODELS.get(local)
            if known is not None and known.starter:
                log.warning("starter_brain", model=local, hint=STARTER_BRAIN_HINT)
        except PlushError as exc:
            _local_unusable(primary, exc)
    if llm.backend == "gemini" and primary is None:
        raise PlushError("llm.backend is 'gemini' but GEMINI_API_KEY is not set")
    reason = "no_api_key" if not key else f"backend_{llm.backend}"
    budget = GeminiBudget(llm.gemini, store, shared=shared) if primary is not None else None
    router = LlmRouter(primary, fallback, no_primary_reason=reason, budget=budget)
    router.description = _describe_brain(
        llm.gemini.model if primary is not None else None, local if fallback is not None else None
    )
    return router


def _local_unusable(primary: LlmBackend | None, exc: PlushError) -> None:
    """Without Gemini, a local model that cannot be used stops the start with why; with it, a warning."""
    if primary is None:
        raise PlushError(
            f"no LLM can answer: GEMINI_API_KEY is not set and the local model is not usable ({exc})"
        ) from exc
    log.warning("llama_unavailable", error=str(exc))


async def start_local_brain(router: LlmRouter, system_prompt: str, config: PlushConfig) -> None:
    """Start the local model's worker process (load, then evaluate the persona once for the KV cache).

    A model that cannot be loaded is handled as at build time (`_local_unusable`). A worker that crashes while
    loading does not stop the server: it restarts behind its breaker and the doctor and dashboard say so.
    """
    if not isinstance(router.fallback, LlamaProcess):
        return
    try:
        await router.fallback.start(system_prompt)
    except LlmError as exc:
        await router.fallback.aclose()
        router.fallback = None
        _local_unusable(router.primary, exc)
        router.description = _describe_brain(config.llm.gemini.model, None)


def _describe_brain(gemini: str | None, local: str | None) -> str:
    """One line for people: which model answers first, which stands in, and whether it is the starter brain."""
    known = KNOWN_MODELS.get(local or "")
    local_text = f"local {local if known else Path(local).name}" if local else ""
    if known is not None and known.starter:
        local_text += f" ({STARTER_BRAIN_HINT})"
    if gemini and local:
        return f"Gemini {gemini}, falling back to {local_text}"
    return f"Gemini {gemini} (no local fallback)" if gemini else local_text


@dataclass
class RunningServer:
    """A started server; `port` is the bound port (useful with port 0)."""

    server: grpc.aio.Server
    port: int
    companion: Companion
    health: health.aio.HealthServicer
    housekeeping: asyncio.Task[None]
    in_flight: TurnsInFlight
    transcriber: Transcriber | None = None
    """The server's Whisper (None with `server.stt_on_server` off): the Telegram bot hears voice notes with it."""
    dashboard: Dashboard | None = None
    """The web dashboard (None with `[dashboard] enabled = false`)."""
    presence: Presence | None = None
    """Which plushes have called lately (the dashboard's devices, the Telegram bot's /status)."""
    configured_port: int = 0
    """`server.port` as configured (0: any free port), the port of this computer's note (`local_server`)."""
    retention: Retention | None = None
    """`retention_days` for turns and their kept audio; the housekeeping applies it every hour."""
    shared: SharedState | None = None
    """The Redis that replicas share (`[server] redis`), or None: everything in this process."""
    sharing: ReplicaSharing | None = None
    """With `shared`: this replica's presence and stored turns, told to the other replicas."""

    async def stop(self, grace: float = 2.0) -> None:
        """Refuse new turns, stop every turn in flight (each is stored, as interrupted, with what was already
        said), and close the store only once every turn is written to it."""
        if self.dashboard is not None:
            await self.dashboard.stop()
        await self.health.enter_graceful_shutdown()
        # A stopped turn may first drain what its client still sends (refusals.py), hence the longer wait.
        await self.in_flight.shutdown(max(grace, DRAIN_LIMIT_S) + 1.0)
        await self.server.stop(grace)
        self.housekeeping.cancel()
        await asyncio.gather(self.housekeeping, return_exceptions=True)
        await self.companion.wait_stored()
        await self.companion.router.aclose()
        await self.companion.store.close()
        if self.sharing is not None:
            await self.sharing.stop()
        if self.shared is not None:
            await self.shared.close()
        local_server.withdraw(self.configured_port)


async def start_server(config: PlushConfig) -> RunningServer:
    """Load everything and start serving on `server.host:server.port`.

    Whatever fails on the way (a model, the warm-up, the port) releases what was already opened, so a failed
    start exits at once instead of hanging on the database's worker thread.
    """
    cfg = config.server
    tokens = config.allowed_devices()
    personas = PersonaSource(cfg.persona)
    persona = personas.current()
    async with AsyncExitStack() as cleanup:
        local_server.announce(cfg.port, "loading")  # a plush on this computer can tell loading from dead
        cleanup.callback(local_server.withdraw, cfg.port)
        shared = await SharedState.connect(cfg.redis) if cfg.redis else None  # unreachable: said before loading
        if shared is not None:
            cleanup.push_async_callback(shared.close)
        store = await Store.open(cfg.database_location())
        cleanup.push_async_callback(store.close)
        paired = await PairedPlushes.open(store, paired_file(cfg))
        transport = choose_transport(cfg, tokens, bool(paired))  # before any model loads: a refused start is quick
        router = await asyncio.to_thread(build_router, config, store, shared)
        cleanup.push_async_callback(router.aclose)
        synthesizer, transcriber = await _load_models(config, router, persona.system_prompt)
        voices = await asyncio.to_thread(_language_voices, config)
        memory = Memory(store, config.memory)
        speech = SpeechOut(synthesizer, config.tts.chunk_ms, _voice_switch(config), voices=voices)
        if not speaks(spoken := speech.voice_for(persona.language), persona.language):
            log.warning("voice_language_mismatch", persona=persona.language, voice=spoken.label)
        companion = Companion(persona=personas, router=router, memory=memory, speech=speech)
        streaming = StreamingStt.from_config(transcriber, config.stt) if transcriber and config.stt.streaming else None
        in_flight = TurnsInFlight(cfg.max_turns_in_flight, cfg.max_stt_in_flight)
        limits = Limits(cfg.max_audio_seconds, cfg.idle_timeout_s, int(cfg.max_message_mb * 1024 * 1024))
        guard = DeviceTokenInterceptor(tokens, paired) if transport.guarded else None
        service = CompanionService(
            companion,
            transcriber,
            limits,
            streaming,
            bind_conversations=transport.guarded,
            owners=Owners(config.owners),
            in_flight=in_flight,
            token_problem=guard.check if guard is not None else None,
            max_speculations=cfg.max_speculations,
        )
        # The plushes' calls, for the dashboard's devices and metrics (every replica's, with Redis).
        presence, sharing = await presence_and_sharing(shared, companion, cleanup)
        server, health_servicer = _grpc_server(cfg, service, guard, presence)
        address = f"{cfg.host}:{cfg.port}"
        certificate = load_or_create(cfg) if transport.tls else None
        try:
            if certificate is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, certificate.credentials())
        except RuntimeError as exc:
            raise PlushError(f"cannot listen on {address}: {exc} (is another server running? set server.port)") from exc
        dashboard = await start_dashboard(config, companion, presence, in_flight, shared)
        if dashboard is not None:
            cleanup.push_async_callback(dashboard.stop)
        await server.start()
        cleanup.pop_all()
    retention = Retention(memory, audio_dir(cfg))
    housekeeping = asyncio.create_task(
        _housekeeping(retention, in_flight, paired if transport.guarded else None), name="plush-housekeeping"
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    local_server.announce(cfg.port, "serving")
    log.info(
        "server_started",
        address=f"{cfg.host}:{port}",
        tls=f"sha256={certificate.fingerprint}" if certificate else "off",
        persona=persona.name,
        brain=router.description,
    )
    return RunningServer(
        server, port, companion, health_servicer, housekeeping, in_flight, transcriber, dashboard, presence, cfg.port,
        retention, shared, sharing,
    )  # fmt: skip


def _grpc_server(
    cfg: ServerConfig, service: CompanionService, guard: DeviceTokenInterceptor | None, presence: Presence
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """The gRPC server with explicit message limits, the device token check (`guard`), the Companion service,
    health and reflection."""
    size = int(cfg.max_message_mb * 1024 * 1024)
    server = grpc.aio.server(
        # The token check first: only calls it lets through are counted as a plush's presence.
        interceptors=[*([guard] if guard is not None else []), presence.interceptor()],
        options=[
            ("grpc.max_receive_message_length", service.limits.transport_bytes),
            ("grpc.max_send_message_length", size),
            # A second server on the same port must fail, not silently share the port's traffic.
            ("grpc.so_reuseport", 0),
        ],
    )
    add_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return server, health_servicer


async def _housekeeping(
    retention: Retention, in_flight: TurnsInFlight, paired: PairedPlushes | None, every_s: float = HOUSEKEEPING_S
) -> None:
    """Apply the retention setting (turns and their audio) at start and then every hour, read the paired plushes
    again and stop the turns of plushes unpaired mid-turn within `REVOCATION_CHECK_S` (on any replica: they are
    in the store); a failure is logged and tried again later."""

    async def prune() -> None:
        while True:
            try:
                await retention.apply()
            except Exception:  # the database may be busy or full; serving turns matters more
                log.exception("housekeeping_failed")
            await asyncio.sleep(every_s)

    async def revocations() -> None:
        unread = False  # said once per outage, not twice a second
        while True:  # one small read of the store, then a look at the copy per turn in flight: cheap
            if paired is not None:
                try:
                    await paired.refresh()
                    if unread:
                        log.info("paired_plushes_read_again")
                    unread = False
                except Exception as exc:  # the database is away (a restart): check against the last copy
                    if not unread:
                        log.warning("paired_plushes_unread", error=str(exc) or type(exc).__name__)
                    unread = True
            in_flight.stop_revoked()
            await asyncio.sleep(REVOCATION_CHECK_S)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(prune())
        tasks.create_task(revocations())


async def serve_forever(
    config: PlushConfig,
    on_ready: Callable[[int], None] | None = None,
    *,
    telegram: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set), then stop gracefully; `on_ready` gets the bound port.

    The Telegram bot runs beside the server when TELEGRAM_BOT_TOKEN is set (`telegram=True`: it must).
    A second SIGINT/SIGTERM while stopping ends the process at once (the system's default action), for when
    a graceful stop is not wanted or does not finish.
    """
    from plush.server.telegram.runner import bot_token, telegram_bot

    # A fatal native crash in this process (a model runtime's kernel, a driver) writes every thread's Python
    # stack to stderr as it dies, so the log says where. The local LLM has a process of its own (llama_worker).
    faulthandler.enable()
    if telegram:
        bot_token(config)  # no token: say so before loading any model
    running = await start_server(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()

    def first_signal() -> None:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_DFL)
        stop.set()
        log.info("server_stopping", hint="turns in flight are stopped and stored; signal again to quit at once")

    for sig in SIGNALS:
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, first_signal)
    try:
        async with telegram_bot(config, running, stop, required=telegram):
            if on_ready is not None:
                on_ready(running.port)
            await stop.wait()
    finally:
        await running.stop()


def _load_voice(config: PlushConfig) -> Synthesizer:
    """The voice `plush voice use` made active, else `[tts] voice`."""
    active = VoiceStore.in_models(ModelStore.from_config(config.models).root).active()
    return _load_named_voice(config, active)


def _load_named_voice(config: PlushConfig, name: str | None) -> Synthesizer:
    """A voice from the voice store by name; None means the config's `[tts] voice`."""
    models = ModelStore.from_config(config.models)
    if name is not None:
        return Synthesizer(VoiceStore.in_models(models.root).get(name).onnx, length_scale=config.tts.length_scale)
    return Synthesizer(models.resolve(config.tts.voice, "tts"), length_scale=config.tts.length_scale)


def _language_voices(config: PlushConfig) -> dict[str, Voice]:
    """`[tts] voices`: a voice per language (a name, a path, a voice of the store, or "espeak-ng")."""
    models = ModelStore.from_config(config.models)
    store = VoiceStore.in_models(models.root)
    voices: dict[str, Voice] = {}
    for language, spec in config.tts.voices.items():
        if spec == BUILTIN:
            voices[language] = EspeakVoice(language)
        else:
            path = store.get(spec).onnx if store.has(spec) else models.resolve(spec, "tts")
            voices[language] = Synthesizer(path, length_scale=config.tts.length_scale)
    return voices


def _voice_switch(config: PlushConfig) -> VoiceSwitch:
    """Lets `plush voice use NAME` change the running server's voice (checked at each turn's start)."""
    store = VoiceStore.in_models(ModelStore.from_config(config.models).root)
    return VoiceSwitch(store, lambda name: _load_named_voice(config, name))


async def _load_models(
    config: PlushConfig, router: LlmRouter, system_prompt: str
) -> tuple[Synthesizer, Transcriber | None]:
    """Start the local brain's worker and load the voice and (optionally) Whisper, side by side."""
    # The server may use a bigger Whisper than the plush (Korean needs at least `small` to be accurate).
    stt_config = config.stt.model_copy(update={"model": config.server.stt_model or config.stt.model})
    stt: Any = (
        asyncio.to_thread(Transcriber.from_config, stt_config, ModelStore.from_config(config.models))
        if config.server.stt_on_server
        else _none()
    )
    _, voice, transcriber = await asyncio.gather(
        start_local_brain(router, system_prompt, config), asyncio.to_thread(_load_voice, config), stt
    )
    return voice, transcriber


async def _none() -> None:
    return None
