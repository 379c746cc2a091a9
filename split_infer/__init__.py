"""split_infer: split CNN inference between a robot and a server over ROS 2."""

__version__ = "0.1.0"
