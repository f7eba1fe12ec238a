"""A stand-in owner for voice-cloning runs (#27): espeak-ng `en-us+f3` reading Plush's English prompts.

Why: measuring a warm-start recipe needs the same owner every run, far from the base voice (joe is a low male
voice; `en-us+f3` is a high female one), without a person at a microphone. The first `--clips` prompts are the
owner's recordings; the next `--held-out` prompts are sentences the voice never trains on, for `voice check`.

Writes (cached: an existing folder with the same settings is reused) `OUT/wavs/<id>.wav` (22.05 kHz mono),
`OUT/metadata.csv` (LJSpeech form, `id|text`, the training clips) and `OUT/held_out.csv` (same form).

    .venv/bin/python bench/stand_in_owner.py                      # 60 clips + 10 held-out, in ~/.cache
    .venv/bin/python bench/stand_in_owner.py --out /tmp/owner --clips 8 --held-out 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from plush.voice_models.cloning.prompts import builtin_prompts

VOICE = "en-us+f3"
"""The espeak-ng voice that stands in for the owner (the issue's: median pitch ~229 Hz, joe's is 86 Hz)."""

DEFAULT_OUT = Path.home() / ".cache" / "plush-test-models" / "stand-in-owner"


def build(out: Path, clips: int, held_out: int) -> Path:
    """Speak the prompts into `out` unless it already holds exactly these settings; return `out`."""
    settings = {"voice": VOICE, "clips": clips, "held_out": held_out}
    stamp = out / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        print(f"stand-in owner: cached in {out}", file=sys.stderr)
        return out
    prompts = builtin_prompts("en")
    if len(prompts) < clips + held_out:
        raise SystemExit(f"only {len(prompts)} English prompts; asked for {clips} + {held_out}")
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    chosen = prompts[: clips + held_out]
    for number, prompt in enumerate(chosen, 1):
        wav = out / "wavs" / f"{prompt.id}.wav"
        subprocess.run(["espeak-ng", "-v", VOICE, "-w", str(wav), prompt.text], check=True)
        if number % 10 == 0:
            print(f"stand-in owner: {number}/{len(chosen)} clips", file=sys.stderr)
    rows = [f"{p.id}|{p.text}\n" for p in chosen]
    (out / "metadata.csv").write_text("".join(rows[:clips]))
    (out / "held_out.csv").write_text("".join(rows[clips:]))
    stamp.write_text(json.dumps(settings))
    return out


def main() -> None:
    """Parse the arguments and build the stand-in owner."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write (default: %(default)s)")
    parser.add_argument("--clips", type=int, default=60, help="training clips (default: %(default)s)")
    parser.add_argument("--held-out", type=int, default=10, help="held-out sentences (default: %(default)s)")
    args = parser.parse_args()
    print(build(args.out, args.clips, args.held_out))


if __name__ == "__main__":
    main()
