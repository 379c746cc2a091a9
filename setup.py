"""ament_python setup for split_infer (also installs with plain pip into a venv)."""

import os
from glob import glob

from setuptools import find_namespace_packages, setup

package_name = "split_infer"


def tree_data_files(source, target):
    """data_files entries installing every file under ``source`` to ``target`` with the same
    sub-directory layout: one (directory, files) entry per directory that holds files, since
    setuptools copies each entry's files flat into its directory. Nothing when ``source`` is
    absent or empty. Every file is copied: a bundle refuses to load with a listed file
    missing or an unlisted one present."""
    entries = []
    for directory, _, files in os.walk(source):
        if files:
            relative = os.path.relpath(directory, source)
            entries.append((os.path.normpath(os.path.join(target, relative)),
                            [os.path.join(directory, f) for f in sorted(files)]))
    return sorted(entries)


setup(
    name=package_name,
    version="0.1.0",
    # The asset folders (default bundle, demo bag) hold data, not code; listing them as
    # namespace packages lets setuptools install their files as package data without
    # warning about each folder.
    packages=find_namespace_packages(include=[package_name, package_name + ".*"],
                                     exclude=["*.__pycache__"]),
    package_data={package_name + ".assets": ["**/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/config/traces",
         glob("config/traces/*.csv") + glob("config/traces/*.py")),
        # The default bundle, also as share data (the launch files' default `bundle`).
        *tree_data_files(os.path.join(package_name, "assets", "default_bundle"),
                         "share/" + package_name + "/bundles/default"),
    ],
    python_requires=">=3.11",  # datetime.UTC
    install_requires=["setuptools", "numpy", "pyyaml"],
    zip_safe=False,
    maintainer="split_infer maintainers",
    maintainer_email="maintainers@split-infer.invalid",
    description="Split CNN inference between a robot and a server over ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "split-infer = split_infer.tools.cli:main",
            "edge_node = split_infer.ros.edge_node:main",
            "cloud_node = split_infer.ros.cloud_node:main",
            "bandwidth_monitor = split_infer.ros.bandwidth_monitor:main",
            "scheduler = split_infer.ros.scheduler:main",
            "bag_player = split_infer.tools.bag.player:main",
            "stage_node = split_infer.ros.stage_node:main",
            "link_prober = split_infer.ros.link_prober:main",
            "probe_echo = split_infer.ros.probe_echo:main",
        ],
    },
)
