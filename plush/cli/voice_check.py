"""`plush voice check` and `plush voice use`: score a voice beside its base, and switch to it only when it passes.

`check` hears test sentences (real-time factor, round-trip CER); `check --deep` adds what tells a voice that
will babble from one that speaks (`plush.voice_models.cloning.deep_check`): the owner's held-out recordings
through the trained checkpoint, the held-out sentences in the voice and its base, and speaker similarity. A
trained voice knows its checkpoint (voice.json) and its run knows its dataset (run.json); the held-out sentences
are the dataset's `held_out.csv` unless `--held-out` names another file in the same form. `use` refuses a voice
whose last check failed. Whisper, torch and Resemblyzer load inside the commands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from plush.cli.console import ConfigOption, out
from plush.cli.voice_train import TRAINING_FOLDER, NameArg, _setup
from plush.config import PlushConfig
from plush.errors import PlushError
from plush.voice_models.cloning.voice_store import DEFAULT, VoiceStore
from plush.voice_models.model_store import ModelStore

MAX_CER_ABOVE_BASE = 0.2
"""How much worse than its base a voice may be heard (round-trip CER) before `use` refuses it: joe scores 0.02,
a voice that learned mumbling 0.9."""


WhisperOption = Annotated[
    str | None, typer.Option(help="Whisper model that listens (name or folder; default: the config's [stt] model).")
]


DeepOption = Annotated[
    bool, typer.Option("--deep", help="Also reconstruction, held-out CER and speaker similarity (minutes on a CPU).")
]
HeldOutOption = Annotated[
    Path | None, typer.Option(help="Held-out recordings for --deep ('id|text', wavs/; default: the dataset's).")
]


def check(  # noqa: PLR0917 - a command's options
    name: NameArg,
    whisper: WhisperOption = None,
    language: Annotated[str | None, typer.Option(help="en or ko (default: the voice's).")] = None,
    deep: DeepOption = False,
    held_out: HeldOutOption = None,
    config: ConfigOption = None,
) -> None:
    """Score a voice: real-time factor and round-trip CER (Whisper hears test sentences), beside its base's.

    With --deep, also: your held-out recordings through the trained checkpoint (CER), and the held-out
    sentences spoken by the voice and its base (CER, and how much each sounds like you: speaker similarity).
    """
    cfg, models, voices = _setup(config)
    report = _check(cfg, models, voices, name, whisper=whisper, language=language, deep=deep, held_out=held_out)
    table = Table(title=f"{name} ({report.language}, heard by {whisper or cfg.stt.model})")
    for column in ("voice", "real-time factor", "CER"):
        table.add_column(column)
    for score in (report.voice, report.base):
        if score is not None:
            table.add_row(score.voice, f"{score.real_time_factor:.3f}", f"{score.cer:.3f}")
    out.print(table)
    for heard in report.voice.sentences:
        out.print(f"  {escape(heard.text)} -> {escape(heard.heard)} (CER {heard.cer:.2f})", highlight=False)
    if report.deep is not None:
        print_deep(report.deep)


def _check(
    cfg: PlushConfig,
    models: ModelStore,
    voices: VoiceStore,
    name: str,
    *,
    whisper: str | None,
    language: str | None,
    deep: bool = False,
    held_out: Path | None = None,
) -> Any:
    """Score the voice (and its base) with `whisper` or the config's STT model, and keep the scores with it."""
    from dataclasses import replace

    from plush.voice_models.cloning.checking import check_voice
    from plush.voice_models.stt import SttOptions, Transcriber

    voice = voices.get(name)
    espeak = json.loads(voice.config.read_text(encoding="utf-8")).get("espeak", {}).get("voice", "en-us")
    lang = language or ("ko" if espeak.startswith("ko") else "en")
    base = Path(str(voice.info["base"])) if str(voice.info.get("base", "")).endswith(".onnx") else None
    inputs = _deep_inputs(models, name, voice.info, held_out) if deep else None
    with out.status("speaking the test sentences and listening ..."):
        transcriber = Transcriber(models.resolve(whisper or cfg.stt.model, "stt"), options=SttOptions(language=lang))
        report = check_voice(voice.onnx, transcriber, lang, base=base)
        if inputs is not None:
            from plush.voice_models.cloning.deep_check import deep_check

            out.print("deep check: your held-out recordings, the voice and its base ...", highlight=False)
            report = replace(report, deep=deep_check(voice.onnx, transcriber=transcriber, language=lang, base=base,
                                                     **inputs))  # fmt: skip
    voices.update_info(name, check={**report.as_dict(), "checked": time.strftime("%F %T")})
    return report


def _deep_inputs(models: ModelStore, name: str, info: dict[str, Any], held_out: Path | None) -> dict[str, Any]:
    from plush.voice_models.cloning.training import read_run_file

    return deep_inputs(info, read_run_file(models.root / TRAINING_FOLDER / name), held_out)


def use(  # noqa: PLR0917 - a command's options
    name: Annotated[str, typer.Argument(help="A voice from `plush voice list`, or `default` for [tts] voice.")],
    force: Annotated[bool, typer.Option("--force", help="Use it even if its check says Whisper cannot follow it.")] = (
        False
    ),
    max_cer_above_base: Annotated[
        float, typer.Option(min=0.0, help="Refuse a voice heard this much worse than its base (round-trip CER).")
    ] = MAX_CER_ABOVE_BASE,
    whisper: WhisperOption = None,
    deep: Annotated[bool, typer.Option("--deep", help="Deep-check it first when its last check was not deep.")] = (
        False
    ),
    config: ConfigOption = None,
) -> None:
    """Make the server speak with this voice; a running server switches at its next turn, no restart.

    The voice is checked first (its last `plush voice check`, or a new one when it has none or was exported
    since): one that Whisper hears far worse than its base voice is refused, with its scores, unless --force.
    A deep check (`check --deep`, or `use --deep`) also refuses a checkpoint that cannot reconstruct your
    held-out recordings, held-out sentences heard far worse than its base's, and a voice less like you than its base.
    """
    cfg, models, voices = _setup(config)
    if name != DEFAULT and not force:
        voice = voices.get(name)
        checked = voice.info.get("check") or {}
        stale = str(checked.get("checked", "")) < str(voice.info.get("exported", ""))
        if not checked or stale or (deep and not checked.get("deep")):
            deep = deep or bool(checked.get("deep"))  # a deep check that went stale is redone deep
            out.print(f"checking {name} first (plush voice check; --force skips it) ...", highlight=False)
            checked = _check(cfg, models, voices, name, whisper=whisper, language=None, deep=deep).as_dict()
        if (problem := _unfit(name, checked, max_cer_above_base)) is not None:
            raise PlushError(problem)
    chosen = voices.use(name)
    spoken = f"{chosen.name} ({chosen.onnx})" if chosen else f"the config's voice ({cfg.tts.voice})"
    out.print(f"the server speaks with {spoken} from its next turn on", highlight=False)


def _unfit(name: str, checked: dict[str, Any], max_above: float) -> str | None:
    """Why the checked voice must not be used (heard far worse than its base; a deep check's reasons), or None."""
    from plush.voice_models.cloning.deep_check import unfit_reasons

    cer = float(checked["voice"]["cer"])
    base = checked.get("base")
    yardstick = float(base["cer"]) if base else 0.0
    reasons = unfit_reasons(checked["deep"], max_above) if checked.get("deep") else []
    if cer <= yardstick + max_above and not reasons:
        return None
    if cer > yardstick + max_above:
        beside = f"its base {base['voice']} scores {yardstick:.2f}" if base else "no base voice was at hand to compare"
        reasons.insert(0, f"Whisper heard its test sentences with a character error rate of {cer:.2f} and {beside} "
                          f"(at most {max_above:g} worse is accepted): it mumbles or babbles")  # fmt: skip
    return (
        f"{name} is not used: {'; '.join(reasons)}. Train it again (--restart) from a warm start fitted to its base "
        "(--fit-steps) at a lower learning rate (--learning-rate 5e-5 kept a CPU run clear, see bench/README.md), "
        "with more recordings if you can, then check again; or use it anyway with --force"
    )


OWNER_CLIPS = 20
"""Training clips the owner's mean speaker embedding is taken over (more barely moves it)."""
HELD_OUT_CLIPS = 10


def deep_inputs(voice_info: dict[str, Any], run: dict[str, Any], held_out: Path | None) -> dict[str, Any]:
    """The checkpoint, held-out clips and owner clips for `deep_check`, or an error saying what to pass."""
    from plush.voice_models.cloning.deep_check import HELD_OUT, read_clips

    dataset = Path(str(run["dataset"])) if run.get("dataset") else None
    chosen = held_out or (dataset / HELD_OUT if dataset is not None else None)
    if chosen is None or not chosen.is_file():
        raise PlushError(
            "the deep check needs sentences the voice never trained on, recorded by you: pass --held-out FILE "
            "(lines 'id|text', the clips in wavs/ beside it, as a dataset's metadata.csv)"
            + (f"; {dataset} has no {HELD_OUT}" if dataset is not None else "")
        )
    owner_file = dataset / "metadata.csv" if dataset is not None else chosen
    checkpoint = Path(str(voice_info["checkpoint"])) if voice_info.get("checkpoint") else None
    return {
        "checkpoint": checkpoint if checkpoint is not None and checkpoint.is_file() else None,
        "held_out": read_clips(chosen, limit=HELD_OUT_CLIPS),
        "owner_clips": read_clips(owner_file, limit=OWNER_CLIPS),
    }


def print_deep(deep: Any) -> None:
    """The deep check's table: the owner's clips, the voice and its base."""
    table = Table(title=f"deep check: {deep.clips} held-out sentences")
    for column in ("speech", "CER", "like owner", "like base"):
        table.add_column(column, no_wrap=True)
    for label, score in (("your clips", deep.owner), (deep.voice.voice, deep.voice), ("base", deep.base)):
        if score is not None:
            base = "-" if score.to_base is None else f"{score.to_base:.3f}"
            table.add_row(label, f"{score.cer:.3f}", f"{score.to_owner:.3f}", base)
    recon = "-" if deep.reconstruction_cer is None else f"{deep.reconstruction_cer:.3f}"
    table.add_row("your clips, reconstructed", recon, "", "")
    out.print(table)
