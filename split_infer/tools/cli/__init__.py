"""The ``split-infer`` command: one module per verb, in the shape of ros2cli's verbs.

Verbs (``split-infer VERB --help`` for each):

* ``demo``              the main job: the whole ROS graph in one process (or ``--offline``)
* ``models``            the registered backbones and their split points
* ``codecs``            the feature codecs and example specs
* ``profile MODEL``     per-split-point shapes, bytes, MACs and head/tail latency
* ``train-backbone``    train a backbone classifier (resumable)
* ``train MODEL``       calibrate or train codecs at split points and write a bundle
* ``eval BUNDLE``       re-measure a bundle from real wire frames
* ``plan [BUNDLE]``     latency and effective-accuracy analysis, or an n-stage chain
* ``testbed``           the graph over a real tc-shaped link (root)
* ``bench NAME``        the benchmarks of :mod:`split_infer.tools.bench`
* ``bag``               make/info/play/record rosbag2 camera bags

Errors a user can cause (:class:`~split_infer.errors.UserError`: unknown model, missing data,
bad codec spec, tampered bundle, a bad option value) print one line and exit with status 2;
anything else is a bug and keeps its traceback. See :mod:`._api` for the registry.
"""

from split_infer.tools.cli._api import VERBS, VerbExtension, build_parser, main

__all__ = ["VERBS", "VerbExtension", "build_parser", "main"]
