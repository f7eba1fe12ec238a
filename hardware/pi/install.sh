#!/usr/bin/env bash
# Set up a Raspberry Pi (Raspberry Pi OS Bookworm, 64-bit) or a Jetson to run the plush unattended:
# system packages, the virtualenv, the plush's models, a config for the paw board, and a systemd user service
# that starts at boot. Run it as the owner's user (not root) from the plush checkout:
#   hardware/pi/install.sh            the plush only, plush[device] (the server runs elsewhere: set [device] server)
#   hardware/pi/install.sh --server   the server too, on this Pi (compiles llama.cpp: installs a compiler)
#   --pi 4 | --pi 5 | --pi other      the board, when /proc/device-tree/model cannot tell (else it asks, or assumes
#                                     a board that transcribes for itself)
# Safe to run again: it keeps an existing config and only adds what is missing.
# hardware/pi/test-arm64.sh runs this script in an emulated arm64 Debian root (see hardware/pi/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
with_server=0
pi=""
while [ $# -gt 0 ]; do
  case "$1" in
    --server) with_server=1 ;;
    --pi) pi="${2:-}"; shift ;;
    *) echo "!! unknown option: $1 (see the top of $0)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$(id -u)" -eq 0 ]; then
  echo "!! run this as the plush's user, not root (it uses sudo where it must)" >&2
  exit 1
fi

echo "==> which board"
model=$(tr -d '\0' 2>/dev/null </proc/device-tree/model || true)
if [ -z "$pi" ]; then
  case "$model" in
    *"Raspberry Pi 5"*) pi=5 ;;
    *"Raspberry Pi 4"* | *"Raspberry Pi 400"* | *"Compute Module 4"*) pi=4 ;;
    *"Raspberry Pi"*) pi=other ;;
    *)
      if [ -t 0 ]; then
        read -r -p "   no Raspberry Pi model found; which board is this? [4/5/other] " pi
      fi ;;
  esac
fi
case "$pi" in
  4 | 5 | other | "") ;;
  *) echo "!! --pi takes 4, 5 or other, not '$pi'" >&2; exit 2 ;;
esac
# Where speech is transcribed (hardware/pi/README.md, "Recommended settings"): a Pi 5 runs whisper-base itself;
# a Pi 4 (or older) is too slow for that and lets the server do it.
stt=device
case "$pi" in 4 | other) stt=server ;; esac
echo "   ${model:-no model in /proc/device-tree}; board: ${pi:-unknown (not a Raspberry Pi)}; [device] stt = \"$stt\""

echo "==> system packages"
packages=(python3-venv libportaudio2 pipewire-pulse alsa-utils)
# The server's local brain (llama-cpp-python) has no aarch64 wheel: pip compiles it. The plush needs no compiler.
[ "$with_server" = 1 ] && packages+=(build-essential cmake python3-dev)
sudo apt-get update -qq
sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

echo "==> access to the paw board (serial) and GPIO"
stale_groups=()
for group in dialout gpio audio; do
  getent group "$group" >/dev/null || continue
  if ! id -nG "$USER" | grep -qw "$group"; then
    sudo usermod -aG "$group" "$USER"
    echo "   added $USER to $group"
  fi
  # This login (and the user's systemd manager, started with it) still has the groups it began with.
  id -nG | grep -qw "$group" || stale_groups+=("$group")
done

echo "==> virtualenv and Plush"
if [ "$with_server" = 1 ]; then scripts/setup; else scripts/setup --device; fi
plush="$repo/.venv/bin/plush"
if [ -n "$pi" ]; then
  # gpiozero's pin library on Bookworm (the Pi 5 has no other); the wheel carries its C part, for aarch64 too.
  .venv/bin/python -m pip install --quiet --progress-bar off "lgpio>=0.2.2"
fi

config_dir="$HOME/.config/plush"
mkdir -p "$config_dir"
if [ ! -f "$config_dir/plush.toml" ]; then
  "$plush" config init "$config_dir/plush.toml" >/dev/null
  # A plush in a toy: the paw board is its button; the board decides where speech is transcribed.
  sed -i 's/^button = "keyboard"/button = "serial"/' "$config_dir/plush.toml"
  [ "$with_server" = 0 ] && sed -i "s/^stt = \"device\"/stt = \"$stt\"/" "$config_dir/plush.toml"
  echo "   wrote $config_dir/plush.toml (button = \"serial\", stt = \"$stt\"; set [device] server to the server)"
fi
if [ ! -f "$config_dir/plush.env" ]; then
  (
    umask 077
    printf '# Secrets for the plush services (never commit this file)\n# GEMINI_API_KEY=\n# PLUSH_DEVICE_TOKEN=\n' \
      >"$config_dir/plush.env"
  )
fi

echo "==> models"
if [ "$with_server" = 1 ]; then
  "$plush" models download --for all
else
  "$plush" models download --for device  # its Whisper, when it transcribes itself; never the server's brain
fi

echo "==> systemd user services"
unit_dir="$HOME/.config/systemd/user"
mkdir -p "$unit_dir"
units=(plush-device.service)
[ "$with_server" = 1 ] && units+=(plush-server.service)
for unit in "${units[@]}"; do
  sed "s|@PLUSH@|$plush|" "hardware/pi/$unit" >"$unit_dir/$unit"
done
next="the plush starts by itself at every boot"
if [ ! -d /run/systemd/system ]; then
  # A container or a chroot (hardware/pi/test-arm64.sh): the units are in place for the system that boots.
  echo "   no systemd running here: installed ${units[*]} in $unit_dir; on the booted system run"
  echo "   sudo loginctl enable-linger $USER && systemctl --user enable --now ${units[*]}"
  next="boot the system, then run the two commands above"
else
  sudo loginctl enable-linger "$USER"
  systemctl --user daemon-reload
  if [ "${#stale_groups[@]}" -gt 0 ]; then
    # Started now, the service would inherit the user manager's old groups: /dev/ttyACM0 refused, restarted
    # every few seconds until the next login. Enabled, it starts at the next boot with the new groups.
    systemctl --user enable "${units[@]}"
    next="reboot now (sudo reboot): $USER's new groups (${stale_groups[*]}) take effect, and the plush starts by itself"
  else
    systemctl --user enable --now "${units[@]}"
    next="the plush is running, and starts by itself at every boot"
  fi
fi

echo "==> checking"
doctor=("$plush" device doctor)
# sudo -u gives the doctor the new groups at once (this login still has its old ones).
[ "${#stale_groups[@]}" -gt 0 ] && doctor=(sudo -u "$USER" env "HOME=$HOME" "XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-}" "${doctor[@]}")
"${doctor[@]}" || echo "!! fix what the doctor says, then: systemctl --user restart plush-device"
echo "==> done: $next. Logs: journalctl --user -u plush-device -f"
