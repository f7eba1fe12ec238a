#!/usr/bin/env bash
# The Pi path, proven on arm64 without a Pi: build a Debian bookworm arm64 root (mmdebstrap, run through
# qemu-user-static), install the plush there exactly as hardware/pi/install.sh does (plush only, as the user
# `pi` with sudo), then check what a Pi owner would: no compiler in the root, `plush --help`, the unit files
# (systemd-analyze verify; a root has no running systemd to start them), `plush device doctor`, and spoken
# file-mode turns (Whisper on the "Pi", and on the server) against a plush server on this host over 127.0.0.1.
# The reply WAV is transcribed here and compared with the reply text: it must be heard right. Prints the times.
#
#   sudo hardware/pi/test-arm64.sh              (as root: debootstrap-style root, chroot, binfmt_misc)
#   PLUSH_ARM64_DIR=/var/tmp/plush-arm64        where the root and the logs go (the base root is kept and reused;
#   PLUSH_ARM64_FRESH=1                         builds it again)
#
# Needs: this checkout's .venv with the server's extras (scripts/setup --test), the real-weight models of the
# quality tests (~/.cache/plush-test-models, or $PLUSH_TEST_MODELS: piper-en-joe-medium, whisper-base,
# qwen2.5-coder-0.5b-instruct-q4_k_m), the network to Debian's mirror and PyPI. Takes ~7 minutes on 2 cores
# (~6.5 more to build the base root the first time), so it is not in CI: run it before a change to the Pi path,
# and put its result in hardware/pi/README.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${PLUSH_ARM64_DIR:-/var/tmp/plush-arm64}
mirror=${PLUSH_ARM64_MIRROR:-http://deb.debian.org/debian}
models=${PLUSH_TEST_MODELS:-$HOME/.cache/plush-test-models}
root="$work/root"
host_py="$repo/.venv/bin/python"
report="$work/report.txt"
[ "$(id -u)" -eq 0 ] || { echo "!! run as root (it builds a root file system and chroots into it)" >&2; exit 1; }
mkdir -p "$work"
: >"$report"
say() { echo "$*" | tee -a "$report"; }
started=$SECONDS
step_start=$SECONDS
step() { step_start=$SECONDS; echo "==> $*"; }
took() { say "$(printf '%-48s %5ss' "$1" $((SECONDS - step_start)))"; step_start=$SECONDS; }

server_pid=""
unmount_root() {
  for m in dev/pts dev sys proc; do
    if mountpoint -q "$root/$m" 2>/dev/null; then umount -l "$root/$m"; fi
  done
}
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  unmount_root
  # The test's own binfmt entry (credentials on, so sudo works inside the root); the system's stays as it was.
  [ -e /proc/sys/fs/binfmt_misc/plush-aarch64 ] && echo -1 >/proc/sys/fs/binfmt_misc/plush-aarch64
  return 0
}
trap cleanup EXIT

step "host tools: mmdebstrap, qemu-user-static"
need=()
for pkg in mmdebstrap qemu-user-static binfmt-support arch-test; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
# P: keep argv[0]; O+C: setuid programs (sudo) get their rights; F: the interpreter is opened now, so it
# works inside the root, which has no qemu of its own.
magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
[ -e /proc/sys/fs/binfmt_misc/plush-aarch64 ] ||
  echo ":plush-aarch64:M::$magic:$mask:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:POCF" \
    >/proc/sys/fs/binfmt_misc/register
arch-test arm64 >/dev/null
took "host tools and binfmt_misc"

step "bookworm arm64 base root"
base="$work/bookworm-arm64-base.tar"
if [ ! -f "$base" ] || [ "${PLUSH_ARM64_FRESH:-0}" = 1 ]; then
  # What Raspberry Pi OS Lite has that the script relies on: sudo, systemd (for systemd-analyze), certificates.
  mmdebstrap --quiet --arch=arm64 --variant=apt --include=ca-certificates,sudo,systemd,procps,python3 \
    bookworm "$base" "$mirror"
  took "mmdebstrap (base root, kept for next time)"
fi
unmount_root  # a run that was killed may have left them: never delete through a bind mount
rm -rf --one-file-system "$root" && mkdir -p "$root"
tar -C "$root" -xf "$base"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# This host's way out: its CA bundle (a TLS proxy may sign for the registries) and pip told to use it (pip
# otherwise trusts only its own certifi copy). A real Pi needs neither; they change nothing that is tested.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
echo "127.0.1.1 $(hostname)" >>"$root/etc/hosts"
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
mount -t proc proc "$root/proc"
# No /sys: this host's describes x86 CPUs, and onnxruntime 1.32's cpuinfo, reading its cache files as an ARM
# CPU's, crashes the import (SIGSEGV) under qemu-user. Without it, it warns and runs. A real Pi's /sys is its own.
mount --rbind /dev "$root/dev"
chroot "$root" useradd -m -s /bin/bash pi
echo "pi ALL=(ALL) NOPASSWD:ALL" >"$root/etc/sudoers.d/pi"
chmod 440 "$root/etc/sudoers.d/pi"
took "fresh root from the base"

step "the checkout, as a Pi owner clones it"
mkdir -p "$root/home/pi/plush"
git -C "$repo" ls-files -co --exclude-standard -z | tar -C "$repo" --null -T - -cf - | tar -C "$root/home/pi/plush" -xf -
chroot "$root" chown -R pi:pi /home/pi/plush
took "copy of the working tree"
as_pi() { chroot "$root" runuser -u pi -- env -i HOME=/home/pi USER=pi LOGNAME=pi LANG=C.UTF-8 \
  PATH=/usr/local/bin:/usr/bin:/bin bash -c "cd /home/pi/plush && $1"; }

step "hardware/pi/install.sh --pi 5 (plush only), in the arm64 root"
set +e
as_pi "hardware/pi/install.sh --pi 5" 2>&1 | tee "$work/install.log"
install_rc=${PIPESTATUS[0]}
set -e
took "install.sh (rc $install_rc)"
[ "$install_rc" = 0 ] || { say "!! install.sh failed: see $work/install.log"; exit 1; }

step "what the install left"
compilers=$(chroot "$root" sh -c 'for c in gcc cc c++ g++ clang cmake make; do command -v $c; done' || true)
say "compilers in the root: ${compilers:-none}"
[ -z "$compilers" ] || { say "!! a plush must need no compiler"; exit 1; }
as_pi ".venv/bin/python -m pip list --format=freeze" >"$work/pip-freeze.txt"
say "installed: $(grep -ciE '^(llama|google-genai|piper|fastapi|python-telegram-bot|tomlkit)' "$work/pip-freeze.txt") server package(s); $(grep -E '^(onnxruntime|ctranslate2|faster-whisper|lgpio|gpiozero)=' "$work/pip-freeze.txt" | tr '\n' ' ')"
as_pi ".venv/bin/python -c 'import lgpio, gpiozero, onnxruntime, ctranslate2'"
as_pi ".venv/bin/plush --help >/dev/null && .venv/bin/plush device --help >/dev/null && .venv/bin/plush device doctor --help >/dev/null"
say "plush --help, device --help, doctor --help: ok"
grep -q '^stt = "device"' "$root/home/pi/.config/plush/plush.toml" && grep -q '^button = "serial"' "$root/home/pi/.config/plush/plush.toml"
say "config: button = \"serial\", [device] stt = \"device\" (Pi 5)"
unit="$root/home/pi/.config/systemd/user/plush-device.service"
grep -q "^ExecStart=/home/pi/plush/.venv/bin/plush device$" "$unit"
! grep -q '^Nice=' "$unit"
verify=$(chroot "$root" systemd-analyze verify "/home/pi/.config/systemd/user/plush-device.service" 2>&1 || true)
say "systemd-analyze verify plush-device.service: ${verify:-clean}"
[ -z "$verify" ] || exit 1
chroot "$root" id -nG pi | grep -qw dialout && say "pi is in dialout (the paw board's serial port)"
grep -q "no systemd running here" "$work/install.log" && say "install.sh saw no running systemd: units installed, not started"
models_line=$(grep -E "^(whisper|piper|qwen|gemma)" "$work/install.log" | sed 's/ ->.*//' | tr '\n' ' ')
say "models the install downloaded: ${models_line:-none}"

step "a plush server on this host, 127.0.0.1"
host="$work/host"
rm -rf "$host" && mkdir -p "$host"
port=$("$host_py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$host/plush.toml" <<EOF
[models]
dir = "$models"
[server]
host = "127.0.0.1"
port = $port
[llm.llama]
model = "qwen2.5-coder-0.5b-instruct-q4_k_m"
[dashboard]
enabled = false
EOF
env -u GEMINI_API_KEY -u TELEGRAM_BOT_TOKEN XDG_DATA_HOME="$host/data" XDG_CACHE_HOME="$host/cache" \
  "$repo/.venv/bin/plush" server --config "$host/plush.toml" >"$host/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 240); do grep -q "listening on" "$host/server.log" && break; sleep 0.5; done
grep -q "listening on" "$host/server.log" || { cat "$host/server.log"; exit 1; }
took "host server up (port $port)"

step "plush device doctor, in the arm64 root"
set +e
as_pi ".venv/bin/plush device doctor --server 127.0.0.1:$port" >"$work/doctor.log" 2>&1
set -e
grep -v cpuinfo "$work/doctor.log" | sed 's/^/   /' | tee -a "$report"  # cpuinfo: the missing /sys, above
grep -q "^ok   server" "$work/doctor.log" && grep -q "^ok   speech model" "$work/doctor.log"
took "doctor (no microphone, speaker or paw board in a root)"

step "a spoken question, made here with the server's voice"
"$host_py" - "$models" "$root/home/pi/question.wav" <<'EOF'
import sys, wave
from pathlib import Path
from piper import PiperVoice
from plush.voice_models.model_store import ModelStore
voice = PiperVoice.load(str(ModelStore(Path(sys.argv[1])).resolve("piper-en-joe-medium", "tts")))
with wave.open(sys.argv[2], "wb") as out:
    voice.synthesize_wav("What colour is the sky on a sunny day?", out)
EOF
chroot "$root" chown pi:pi /home/pi/question.wav

heard() {  # $1: log of `plush device`, $2: reply WAV; prints the reply, its transcript and the word error rate
  "$host_py" - "$models" "$1" "$2" <<'EOF' | tee -a "$report"
import re, sys
from pathlib import Path
import jiwer
from faster_whisper import WhisperModel
from plush.voice_models.model_store import ModelStore
log = Path(sys.argv[2]).read_text()
said = re.search(r"^plush: (.*)$", log, re.M)
you = re.search(r"^you: (.*)$", log, re.M)
model = WhisperModel(str(ModelStore(Path(sys.argv[1])).resolve("whisper-base", "stt")), device="cpu", compute_type="int8")
segments, _ = model.transcribe(sys.argv[3], language="en")
text = " ".join(s.text.strip() for s in segments)
norm = lambda s: re.sub(r"[^a-z0-9' ]", " ", s.lower()).split()
reply = said.group(1).strip() if said else ""
wer = jiwer.wer(" ".join(norm(reply)), " ".join(norm(text))) if reply else 1.0
print(f"   the plush heard: {you.group(1).strip() if you else '-'}")
print(f"   the server said: {reply}")
print(f"   its WAV, heard back here (whisper-base): {text}")
print(f"   word error rate of the reply as heard: {wer:.2f} ({'heard right' if wer <= 0.25 else 'NOT heard right'})")
sys.exit(0 if wer <= 0.25 else 1)
EOF
}

step "file-mode turn, Whisper on the plush ([device] stt = \"device\")"
as_pi ".venv/bin/plush device --server 127.0.0.1:$port --audio-file /home/pi/question.wav --output-file /home/pi/reply.wav" \
  | tee "$work/turn-device.log"
took "spoken turn, speech to text on the arm64 plush"
heard "$work/turn-device.log" "$root/home/pi/reply.wav"
grep "answered by" "$work/turn-device.log" | sed 's/^/   /' | tee -a "$report"

step "file-mode turn, Whisper on the server (a Pi 4's [device] stt = \"server\")"
as_pi "PLUSH_DEVICE__STT=server .venv/bin/plush device --server 127.0.0.1:$port --audio-file /home/pi/question.wav --output-file /home/pi/reply-server-stt.wav" \
  | tee "$work/turn-server.log"
took "spoken turn, speech to text on the server"
heard "$work/turn-server.log" "$root/home/pi/reply-server-stt.wav"

say "$(printf '%-48s %5ss' "total" $((SECONDS - started)))"
say "emulated with $(qemu-aarch64-static --version | head -1) on $(nproc) x86 cores: no Pi timings"
echo "==> report: $report"
