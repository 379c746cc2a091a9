#!/usr/bin/env bash
# Create an SROS2 keystore with one enclave per split_infer node, for a robot or server whose
# ROS 2 has the sros2 CLI and a DDS built with security (e.g. ros-<distro>-ros-base with Fast
# DDS from the ROS 2 apt repositories). The pip-installed ros-* wheels this repository's
# .venv uses do NOT have Fast DDS's security plugins: there, nodes refuse to start under
# ROS_SECURITY_ENABLE=true (see the README's SROS2 section).
#
#   scripts/sros2_keystore.sh KEYSTORE [NAMESPACE ...]      # e.g. ~/sros2_keystore r1 r2
#
# then run each node with
#   export ROS_SECURITY_KEYSTORE=KEYSTORE ROS_SECURITY_ENABLE=true ROS_SECURITY_STRATEGY=Enforce
#   ros2 run split_infer edge_node --ros-args --enclave /r1/edge_node -p bundle:=...
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 KEYSTORE [NAMESPACE ...]" >&2
  exit 2
fi
command -v ros2 >/dev/null || { echo "$0: needs the ros2 CLI with sros2 (source ROS 2 first)" >&2; exit 2; }
ros2 security --help >/dev/null 2>&1 || { echo "$0: the ros2 CLI has no 'security' verb (install ros-\$ROS_DISTRO-sros2)" >&2; exit 2; }
keystore=$1
shift
namespaces=("$@")
[ ${#namespaces[@]} -gt 0 ] || namespaces=("")
[ -d "$keystore" ] || ros2 security create_keystore "$keystore"
ros2 security create_enclave "$keystore" /cloud_node
for ns in "${namespaces[@]}"; do
  prefix=${ns:+/${ns#/}}
  for node in edge_node bandwidth_monitor scheduler bag_player stage_node; do
    ros2 security create_enclave "$keystore" "$prefix/$node"
  done
done
echo "keystore $keystore: enclaves for cloud_node and ${namespaces[*]:-the root namespace}"
