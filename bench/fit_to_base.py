"""Fit-to-base curve (#27): reconstruction CER of held-out speech through a warm start's posterior encoder -> decoder,
before and while its fresh parts are fitted to the base voice's own speech (`plush.voice_models.cloning.fit_to_base`).

Base: the real Piper joe (medium); held-out speech: joe speaking the stand-in owner's held-out sentences (never in
the fitting texts), and the stand-in owner's own held-out clips (bench/stand_in_owner.py); Whisper base listens.
Prints one JSON line per evaluation and writes the fitted checkpoint to OUT/fitted.ckpt.

    nice -n 10 .venv/bin/python bench/fit_to_base.py --steps 300 --every 50 --out /tmp/fit-to-base
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import wave
from pathlib import Path

from harness import real_weights
from stand_in_owner import DEFAULT_OUT, build

from plush.voice_models.cloning.deep_check import Clip, read_clips, reconstruction_cer
from plush.voice_models.cloning.fit_to_base import FitPlan, fit_parts, load_generator
from plush.voice_models.cloning.prompts import builtin_prompts
from plush.voice_models.cloning.warm_start import WARM_START_KEY, import_training, warm_start_checkpoint
from plush.voice_models.stt import SttOptions, Transcriber
from plush.voice_models.tts import Synthesizer


def base_held_out(onnx: Path, clips: list[Clip], folder: Path) -> list[Clip]:
    """The base voice speaking the held-out sentences, as clips."""
    voice = Synthesizer(onnx)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for number, clip in enumerate(clips):
        wav = folder / f"base{number:03d}.wav"
        with wave.open(str(wav), "wb") as audio:
            audio.setnchannels(1)
            audio.setsampwidth(2)
            audio.setframerate(voice.sample_rate)
            audio.writeframes(voice.synthesize(clip.text))
        out.append(Clip(wav, clip.text))
    return out


def main() -> None:
    """Warm start, evaluate, fit `--every` steps, evaluate, ... to `--steps`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fit-to-base"))
    args = parser.parse_args()
    torch = import_training()
    torch.set_num_threads(args.threads)
    joe = real_weights("piper-en-joe-medium", "tts")
    owner = build(DEFAULT_OUT, 60, 10)
    owner_held = read_clips(owner / "held_out.csv")
    held_texts = {c.text for c in owner_held}
    texts = [p.text for p in builtin_prompts("en") if p.text not in held_texts]
    base_held = base_held_out(joe, owner_held, args.out / "base-held-out")
    transcriber = Transcriber(real_weights("whisper-base", "stt"), options=SttOptions(language="en"))
    warm = args.out / "warm.ckpt"
    if not warm.is_file():
        warm_start_checkpoint(joe, warm)
    model, data = load_generator(warm)
    started = time.perf_counter()

    def evaluate(step: int, extra: dict[str, float]) -> None:
        row = {
            "step": step,
            "base_reconstruction_cer": round(reconstruction_cer(model, base_held, transcriber, "en"), 3),
            "owner_reconstruction_cer": round(reconstruction_cer(model, owner_held, transcriber, "en"), 3),
            "wall_s": round(time.perf_counter() - started, 1),
            **extra,
        }
        print(json.dumps(row), flush=True)

    evaluate(0, {})
    done = 0
    while done < args.steps:
        chunk = min(args.every, args.steps - done)
        last: dict[str, float] = {}

        def keep(progress: object, last: dict[str, float] = last) -> None:
            last.update(z_nll=round(progress.z_nll, 3), duration_nll=round(progress.duration_nll, 3),  # type: ignore[attr-defined]
                        s_per_step=round(progress.seconds_per_step, 2))  # type: ignore[attr-defined]  # fmt: skip

        plan = FitPlan(steps=chunk, batch_size=args.batch, learning_rate=args.lr, seed=1234 + done)
        fit_parts(model, joe, texts, plan, keep)
        done += chunk
        data["state_dict"] = model.state_dict()
        data[WARM_START_KEY] = {**data.get(WARM_START_KEY, {}), "fitted_to_base": done}
        torch.save(data, args.out / "fitted.ckpt")  # after each chunk: a run stopped early still leaves one
        print(f"fitted checkpoint ({done} steps): {args.out / 'fitted.ckpt'}", file=sys.stderr, flush=True)
        evaluate(done, last)


if __name__ == "__main__":
    main()
