"""What works under SROS2 with the pip-installed ROS 2 (README, "SROS2"): the ros-* wheels'
Fast DDS is built without its security plugins, so with ``ROS_SECURITY_ENABLE=true`` a node
cannot be created; split_infer's nodes then exit with status 2 and say why, instead of a
traceback. Where the DDS has the plugins (a ROS 2 install from the apt repositories) this
test finds a working participant and checks nothing more: the robot-side steps are documented.
"""

import os
import subprocess
import sys

import pytest
from ros_fixtures import ros_domain_id, tiny_bundle_fixture  # noqa: F401  (fixture)


def _secure_env(keystore):
    env = dict(os.environ)
    env.update({"ROS_SECURITY_ENABLE": "true", "ROS_SECURITY_STRATEGY": "Enforce",
                "ROS_SECURITY_KEYSTORE": str(keystore), "ROS_DOMAIN_ID": str(ros_domain_id())})
    return env


def _participant_error(env) -> str | None:
    code = ("import rclpy\n"
            "rclpy.init()\n"
            "try:\n"
            "    rclpy.create_node('probe', enable_rosout=False)\n"
            "except Exception as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    return out.stdout.strip() or None


@pytest.mark.parametrize("module", ["split_infer.ros.edge_node", "split_infer.ros.cloud_node"])
def test_nodes_refuse_sros2_clearly_without_security_plugins(module, tiny_bundle, tmp_path):
    keystore = tmp_path / "keystore"
    (keystore / "enclaves").mkdir(parents=True)
    env = _secure_env(keystore)
    problem = _participant_error(env)
    if problem is None or "security" not in problem.lower():
        pytest.skip(f"this DDS creates secure participants ({problem}); see the README")
    assert "doesn't have the security libraries" in problem
    out = subprocess.run([sys.executable, "-m", module, "--ros-args", "-p",
                          f"bundle:={tiny_bundle.path}"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "cannot start" in out.stderr and "SROS2" in out.stderr

