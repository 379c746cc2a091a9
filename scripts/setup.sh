#!/usr/bin/env bash
# Set up split_infer on a fresh Debian 12 machine: apt packages, .venv with every Python
# dependency (rclpy from the ros-* wheels unless a system ROS 2 is sourced), the package
# itself (editable). Idempotent: re-running skips what is already in place.
#
#   scripts/setup.sh          runtime dependencies
#   scripts/setup.sh --test   also the test tools and the Fashion-MNIST data set
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
for arg in "$@"; do
  case "$arg" in
    --test) with_test=1 ;;
    *) echo "usage: scripts/setup.sh [--test]" >&2; exit 2 ;;
  esac
done

# pip warns about every local index location it cannot use; only real output matters, and
# pip's own exit status must survive the filter.
pip_q() { .venv/bin/python -m pip -q "$@" 2> >(grep -v '^WARNING: Location' >&2); }

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "[setup] need root for: $*" >&2; return 1; fi
}

apt_packages=()
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_packages+=(python3-venv python3-pip)
if [ "$with_test" -eq 1 ]; then
  [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] \
    || apt_packages+=(dataset-fashion-mnist)
  command -v ip >/dev/null || apt_packages+=(iproute2)
  command -v iptables >/dev/null || apt_packages+=(iptables)  # testbed: loss and outages
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
  say "apt-get install ${apt_packages[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && python3 -c 'import rclpy' 2>/dev/null; then
  system_ros=1
  say "using the sourced ROS 2 ${ROS_DISTRO} (rclpy from the system)"
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  if [ "$system_ros" -eq 1 ]; then
    python3 -m venv --system-site-packages .venv
  else
    python3 -m venv .venv
  fi
fi

reqs=(requirements.txt)
[ "$system_ros" -eq 1 ] || reqs+=(requirements-ros.txt)
[ "$with_test" -eq 1 ] && reqs+=(requirements-test.txt)
stamp=".venv/.split_infer-$(cat "${reqs[@]}" setup.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing Python dependencies (${reqs[*]}); torch is large, this takes a few minutes"
  pip_q install --upgrade pip
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  pip_q install "${args[@]}"
  # setuptools warns on every editable install that a folder named like the package may
  # shadow it; that folder is this checkout, by design.
  PYTHONWARNINGS="ignore:Editable installation" pip_q install --no-deps -e .
  .venv/bin/python -c 'import torch, onnxruntime, split_infer' \
    || { echo "[setup] the environment is incomplete, see the pip output above" >&2; exit 1; }
  touch "$stamp"
fi
say "ready: .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"

# The 224-px EfficientNet-Lite0 bundle ships packed (what the project trained: bottlenecks,
# calibration, manifest); its backbone files are regenerated from the published weights the
# requirements installed, then every file is verified by sha256. Once per bundle version.
if [ -f split_infer/assets/imagenet_bundle/assembly.json ]; then
  say "assembling the 224-px bundle (split_infer/assets/imagenet_bundle)"
  .venv/bin/split-infer bundle assemble split_infer/assets/imagenet_bundle
fi
