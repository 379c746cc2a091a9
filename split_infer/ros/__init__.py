"""Thin rclpy nodes: each translates between ROS messages and a ROS-free object of
:mod:`split_infer.pipeline` or :mod:`split_infer.adaptation`."""
