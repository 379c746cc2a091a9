"""ament_python setup for split_infer (also installs with plain pip into a venv)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "split_infer"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    package_data={package_name: ["assets/**/*"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
        ("share/" + package_name + "/config/traces", glob("config/traces/*")),
    ],
    python_requires=">=3.10",
    install_requires=["setuptools", "numpy", "pyyaml"],
    zip_safe=False,
    maintainer="split_infer maintainers",
    maintainer_email="maintainers@split-infer.invalid",
    description="Split CNN inference between a robot and a server over ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "split-infer = split_infer.cli:main",
            "edge_node = split_infer.ros.edge_node:main",
            "cloud_node = split_infer.ros.cloud_node:main",
            "bandwidth_monitor = split_infer.ros.bandwidth_monitor:main",
            "scheduler = split_infer.ros.scheduler:main",
            "bag_player = split_infer.ros.bag_player:main",
        ],
    },
)
