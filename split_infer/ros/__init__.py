"""Thin rclpy nodes over the ROS-free runtime (split_infer.runtime)."""
