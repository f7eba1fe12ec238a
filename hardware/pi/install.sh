#!/usr/bin/env bash
# Set up a Raspberry Pi (Raspberry Pi OS Bookworm, 64-bit) or a Jetson to run the plush unattended:
# system packages, the virtualenv, the models, a config for the paw board, and a systemd user service that
# starts at boot. Run it as the owner's user (not root) from the plush checkout:
#   hardware/pi/install.sh            the plush only (the server runs elsewhere: set [device] server)
#   hardware/pi/install.sh --server   the server too, on this Pi
# Safe to run again: it keeps an existing config and only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
with_server=0
[ "${1:-}" = "--server" ] && with_server=1

if [ "$(id -u)" -eq 0 ]; then
  echo "!! run this as the plush's user, not root (it uses sudo where it must)" >&2
  exit 1
fi

echo "==> system packages"
packages=(python3-venv python3-dev libportaudio2 pipewire-pulse alsa-utils)
# The Pi 5's GPIO needs lgpio; harmless elsewhere.
if grep -q "Raspberry Pi 5" /proc/device-tree/model 2>/dev/null; then packages+=(python3-lgpio); fi
sudo apt-get update -qq
sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"

echo "==> access to the paw board (serial) and GPIO"
for group in dialout gpio audio; do
  if getent group "$group" >/dev/null && ! id -nG | grep -qw "$group"; then
    sudo usermod -aG "$group" "$USER"
    echo "   added $USER to $group (takes effect at the next login or reboot)"
  fi
done

echo "==> virtualenv and Plush"
scripts/setup
plush="$repo/.venv/bin/plush"

config_dir="$HOME/.config/plush"
mkdir -p "$config_dir"
if [ ! -f "$config_dir/plush.toml" ]; then
  "$plush" config init "$config_dir/plush.toml" >/dev/null
  # A plush in a toy: the paw board is its button; it transcribes on the server when there is one elsewhere.
  sed -i 's/^button = "keyboard"/button = "serial"/' "$config_dir/plush.toml"
  echo "   wrote $config_dir/plush.toml (button = \"serial\"; edit [device] server to use another machine)"
fi
if [ ! -f "$config_dir/plush.env" ]; then
  umask 077
  printf '# Secrets for the plush services (never commit this file)\n# GEMINI_API_KEY=\n# PLUSH_DEVICE_TOKEN=\n' \
    >"$config_dir/plush.env"
fi

echo "==> models"
"$plush" models download

echo "==> systemd user services"
unit_dir="$HOME/.config/systemd/user"
mkdir -p "$unit_dir"
units=(plush-device.service)
[ "$with_server" = 1 ] && units+=(plush-server.service)
for unit in "${units[@]}"; do
  sed "s|@PLUSH@|$plush|" "hardware/pi/$unit" >"$unit_dir/$unit"
done
sudo loginctl enable-linger "$USER"
systemctl --user daemon-reload
systemctl --user enable --now "${units[@]}"

echo "==> checking"
"$plush" device doctor || echo "!! fix what the doctor says, then: systemctl --user restart plush-device"
echo "==> done. Logs: journalctl --user -u plush-device -f"
