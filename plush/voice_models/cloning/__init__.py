"""Voice cloning: from the owner's own speech to a dataset Piper's trainer takes.

The dataset half lives here: `recording` (a guided, resumable recording session with per-take checks),
`importing` (existing audio cut at pauses and transcribed, for the owner to review), `dataset` (`prepare`: the
folder Piper's trainer reads, `wavs/*.wav` at 22,050 Hz + `metadata.csv` + `report.json`) and `prompts` (our own
Korean and English sentences to read aloud). Training and export build on that folder and nothing else.
"""

from __future__ import annotations

PIPER_RATE = 22050
"""The sample rate of every medium Piper voice, and so of the dataset `prepare` writes."""
