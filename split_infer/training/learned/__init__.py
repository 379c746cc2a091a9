"""Training learned bottlenecks, the accuracy-aware search, and export to a bundle.

::

    backbone ─▶ [backbone slimming, e.g. BBNet's: L1 on BN γ, prune 40 %, fine-tune] (optional)
       │
       ├─ per split point ─ SplitData: head features of the training images, precomputed once
       │                    when the backbone is frozen (plus augmented copies)
       │     └─ per method ─ per ratio, low → high compression (Alg. 1 of BottleNet / BBNet):
       │            train (resumable, checkpoint per epoch) ─▶ accuracy with the real codec
       │            stop at the first ratio whose loss vs the backbone exceeds the threshold
       ▼
    bundle: head+encoder and decoder+tail ONNX parts per kept configuration (one pair per split
    for the rateless model), calibrated wire codecs, fill values, method weights, measured
    accuracy and bytes per frame from real wire frames (``evaluate_bundle``).

Modules, in the order data flows through them:

* :mod:`.data`: :class:`LearnedTrainConfig` and :class:`SplitData` (features at one split);
* :mod:`.runs`: checkpointed, resumable runs through a list of stages, and the loss;
* :mod:`.parts`: the head/tail a configuration trains through, measurement on the search set;
* :mod:`.trainer`: one (split, method, ratio), :func:`train_config`;
* :mod:`.search`: the accuracy-aware search, :func:`search_split`;
* :mod:`.slimming`: backbone slimming, :func:`slim_backbone`;
* :mod:`.export`: ONNX parts, calibration, fill and weights of the kept configurations;
* :mod:`.bundle`: everything above, end to end, :func:`train_bundle`.

**Frozen-backbone fast path.** With ``freeze_backbone`` (BBNet §3.2.3 freezes everything but
the compression layer; BottleNet and Hu & K fine-tune end to end, which ``freeze_backbone=
False`` does, for all methods or per method through the option ``freeze_backbone``) only the
encoder/decoder learn, so the head is run once: the training images'
features are precomputed for the un-augmented images and for ``augment_copies`` randomly
cropped + flipped copies (the backbone trainer's augmentation). Each epoch draws, per image,
one of those ``1 + augment_copies`` versions, so an epoch costs the same as without
augmentation and the head never runs again. When the copies would not fit
``memory_budget_mb``, the head runs per batch instead (no gradient, fresh augmentation).
The tail stays in the graph (gradients flow through it to the decoder) but is not updated.

**Per-method schedules** are the methods' own: the trainer only calls the hooks of
:class:`~split_infer.codecs.learned.LearnedBottleneck` and of the method's registry entry (see
:mod:`split_infer.codecs.learned._api`), so a new method is one new module there (plus its
import in that package's ``__init__``, which registers it). Today:

* ``bottlenet``: the real codec (8-bit quant + JPEG) in the forward pass, identity backward
  (:class:`~split_infer.codecs.learned.CodecSTE`), with each frame's own min/max as in eq. (1)
  (a calibration would go stale while the encoder learns);
  ``codec_in_loop=False`` gives the *naive* insertion of BottleNet §3.3 / Fig. 7
  (:func:`compare_compression_aware` measures both).
* ``hu_ae``: cross-entropy only, end to end when the backbone is not frozen (§IV-C c).
* ``aecnn``: Alg. 1 step by step: the channel-attention module is trained in place once per
  split, importance = mean attention over the training set (eq. 8); per ratio V the C/V most
  important channels are kept, the pruned network is fine-tuned (only when the backbone
  trains: with a frozen backbone nothing is left to tune in that step), then the
  feature-recovery module is inserted and trained.
* ``bbnet``: the 8-bit tanh quantizer in the graph with an identity gradient (bit-identical to
  the ``tanhq`` wire stage); optional network slimming of the backbone first.
* ``rateless``: PCA initialisation, then nested dropout: each sample draws how many leading
  channels survive; the others are replaced by the running channel means (the exact
  training-set means are written as the bundle's fill values).

**Loss and optimiser.** Cross-entropy, as in every paper; Adam with a per-step cosine decay
(the papers' long SGD schedules do not fit a CPU budget of a few epochs). Two optional terms
go beyond the papers: ``distill`` (KL to the uncompressed backbone's logits) and
``reconstruction`` (feature MSE); both default to 0.

**Resumability.** Every (split, method, ratio) trains in its own directory of ``work_dir``
(``progress.json`` + ``state.safetensors``, written after every epoch). A rerun skips finished
configurations and resumes unfinished ones from their last completed epoch; a configuration
whose settings changed is retrained from scratch.
"""

from split_infer.training.learned.bundle import train_bundle
from split_infer.training.learned.data import LearnedTrainConfig, SplitData
from split_infer.training.learned.parts import TrainedConfig, evaluate_config
from split_infer.training.learned.runs import Stage
from split_infer.training.learned.search import (
    SearchRow,
    compare_compression_aware,
    search_split,
)
from split_infer.training.learned.slimming import slim_backbone
from split_infer.training.learned.trainer import train_config

__all__ = [
    "LearnedTrainConfig",
    "SearchRow",
    "SplitData",
    "Stage",
    "TrainedConfig",
    "compare_compression_aware",
    "evaluate_config",
    "search_split",
    "slim_backbone",
    "train_bundle",
    "train_config",
]
