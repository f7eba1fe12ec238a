"""The recording session in a plain terminal: Enter starts and stops a take, one letter picks what comes next.

Only line input is used (no raw keyboard mode), so it works in any terminal, over SSH and in tmux. While a take
records, a live level meter shows that the microphone hears something. End of input (Ctrl+D) counts as quit.
"""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from plush.voice_models.audio import FloatAudio
from plush.voice_models.cloning.audio_checks import TakeCheck
from plush.voice_models.cloning.microphone import Microphone, _sounddevice
from plush.voice_models.cloning.prompts import Prompt
from plush.voice_models.cloning.recording import Action


class TerminalUI:
    """`SessionUI` on a rich console, reading lines from standard input."""

    def __init__(self, console: Console, output_device: str | None = None) -> None:
        self.console = console
        self.output_device = output_device

    def _ask(self, prompt: str) -> str | None:
        try:
            return self.console.input(prompt).strip().lower()
        except EOFError:
            return None

    def show_prompt(self, prompt: Prompt, position: int, total: int, attempt: int) -> None:
        title = f"{position} of {total}" + (f" · take {attempt}" if attempt > 1 else "")
        self.console.print()
        self.console.print(Panel(Text(prompt.text, style="bold"), title=title, subtitle=prompt.id, expand=False))

    def wait_to_start(self) -> Action:
        while True:
            answer = self._ask("[dim]Enter: record · s: skip · q: quit[/] > ")
            if answer is None or answer == "q":
                return Action.QUIT
            if answer == "s":
                return Action.SKIP
            if answer == "":
                return Action.START

    def wait_to_stop(self, microphone: Microphone) -> None:
        def meter() -> Text:
            level = microphone.level
            bars = int(min(1.0, level) * 30)
            style = "red" if level >= 0.99 else "green"
            return Text.assemble(
                ("● recording ", "red"),
                (f"{microphone.seconds:4.1f} s ", ""),
                ("█" * bars, style),
                ("·" * (30 - bars), "dim"),
            )

        self.console.print("[dim]read the sentence, then press Enter[/]")
        with Live(get_renderable=meter, console=self.console, refresh_per_second=10, transient=True):
            self._ask("")

    def review(self, prompt: Prompt, check: TakeCheck, audio: FloatAudio, rate: int) -> Action:
        self._show_check(check)
        if check.speech_s == 0:
            choices, default = "Enter: again · s: skip · q: quit", Action.REDO
        elif check.ok:
            choices, default = "Enter: keep · r: redo · p: play · s: skip · q: quit", Action.KEEP
        else:
            choices, default = "Enter: redo · k: keep anyway · p: play · s: skip · q: quit", Action.REDO
        while True:
            answer = self._ask(f"[dim]{choices}[/] > ")
            if answer is None or answer == "q":
                return Action.QUIT
            if answer == "":
                return default
            if answer == "p":
                start, end = check.trim
                _sounddevice().play(audio[start:end], rate, device=self.output_device, blocking=True)
                continue
            action = {"r": Action.REDO, "s": Action.SKIP, "k": Action.KEEP}.get(answer)
            if action is not None:
                return action

    def _show_check(self, check: TakeCheck) -> None:
        noise = "?" if check.noise_dbfs is None else str(round(check.noise_dbfs))
        levels = f"speech {round(check.speech_dbfs)} dBFS · peak {round(check.peak_dbfs)} · noise {noise}"
        line = f"{check.seconds:.1f} s · {levels}"
        if check.heard is not None:
            line += f" · heard: {check.heard}"
        self.console.print(escape(line), style="dim", highlight=False)
        for problem in check.problems:
            self.console.print(f"[yellow]![/] {escape(problem)}", highlight=False)
        if check.ok:
            self.console.print("[green]✓ good take[/]")
