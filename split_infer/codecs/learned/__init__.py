"""Learned bottlenecks at a split point: encoder (edge) + wire codec + decoder (cloud).

>>> from split_infer.codecs.learned import get_method, list_methods
>>> list_methods()
['aecnn', 'bbnet', 'bottlenet', 'hu_ae', 'rateless']
>>> pair = get_method("bottlenet").build((32, 16, 16), ratio=8)
>>> pair.code_shape, pair.wire_codec
((16, 8, 8), 'quant:bits=8,per=channel+jpeg:quality=90')

Methods (each module's docstring cites its paper section):

* :mod:`~.bottlenet`: BottleNet's reduction/restoration units, compression-aware training;
* :mod:`~.hu_ae`: Hu & Krishnamachari's inverted-residual AE, γ = 2/4/8 (Table I);
* :mod:`~.aecnn`: AECNN's channel attention, pruning to C/V and feature recovery;
* :mod:`~.bbnet`: BBNet's conv + BN + tanh layer, 8-bit ``tanhq``, network slimming;
* :mod:`~.rateless`: importance-ordered channels with tail-drop training (one model, all
  ratios).

:class:`~.ste.CodecSTE` runs any registry codec forward with an identity gradient.
Training, the accuracy-aware search and bundle export live in
:mod:`split_infer.training.learned`; it calls the training hooks of
:class:`~._api.LearnedBottleneck` and of the registry entry, which each method's module
overrides (see :mod:`~._api`), so a new method is one new module here.
"""

# Importing the method modules registers them.
from split_infer.codecs.learned import aecnn, bbnet, bottlenet, hu_ae, rateless
from split_infer.codecs.learned._api import (
    BackboneSlimming,
    LearnedBottleneck,
    MethodSpec,
    SplitPretraining,
    TrainingContext,
    TrainingPhase,
    build_method,
    get_method,
    get_slimming,
    list_methods,
    reduction_plan,
    register_method,
)
from split_infer.codecs.learned.ste import CodecSTE

__all__ = [
    "BackboneSlimming",
    "CodecSTE",
    "LearnedBottleneck",
    "MethodSpec",
    "SplitPretraining",
    "TrainingContext",
    "TrainingPhase",
    "aecnn",
    "bbnet",
    "bottlenet",
    "build_method",
    "get_method",
    "get_slimming",
    "hu_ae",
    "list_methods",
    "rateless",
    "reduction_plan",
    "register_method",
]
