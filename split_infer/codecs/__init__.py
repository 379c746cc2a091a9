"""Feature-tensor codecs: a tensor stage plus a byte stage, built from spec strings.

>>> from split_infer.codecs import get_codec
>>> codec = get_codec("quant:bits=4,per=channel+zstd")
>>> codec.spec
'quant:bits=4,w=3.3,per=channel+zstd:level=3'

See :mod:`split_infer.codecs._api` for the architecture and the registry,
:mod:`~split_infer.codecs.quant`, :mod:`~split_infer.codecs.floats`,
:mod:`~split_infer.codecs.fixed` (BBNet's tanh quantizer),
:mod:`~split_infer.codecs.bytestages`, :mod:`~split_infer.codecs.entropy` and
:mod:`~split_infer.codecs.image` for the built-in stages, and
:mod:`split_infer.tools.bench.codec_table` for measuring them on real features.
"""

# Importing the stage modules registers the built-in stages (ids are part of the wire format).
from split_infer.codecs import bytestages, entropy, fixed, floats, image, quant
from split_infer.codecs._api import (
    DEFAULT_MAX_TENSOR_BYTES,
    EXAMPLE_SPECS,
    LEARNED_STAGE_ID_BASE,
    ByteStage,
    Codec,
    CodecSpecError,
    EncodedTensor,
    Param,
    SymbolSpec,
    TensorStage,
    canonical_spec,
    codec_from_id,
    get_codec,
    is_registered_codec_id,
    list_byte_stages,
    list_codecs,
    list_tensor_stages,
    make_codec_id,
    parse_spec,
    register_byte_stage,
    register_tensor_stage,
    split_codec_id,
)

__all__ = [
    "DEFAULT_MAX_TENSOR_BYTES",
    "EXAMPLE_SPECS",
    "LEARNED_STAGE_ID_BASE",
    "ByteStage",
    "Codec",
    "CodecSpecError",
    "EncodedTensor",
    "Param",
    "SymbolSpec",
    "TensorStage",
    "bytestages",
    "canonical_spec",
    "codec_from_id",
    "entropy",
    "fixed",
    "floats",
    "get_codec",
    "image",
    "is_registered_codec_id",
    "list_byte_stages",
    "list_codecs",
    "list_tensor_stages",
    "make_codec_id",
    "parse_spec",
    "quant",
    "register_byte_stage",
    "register_tensor_stage",
    "split_codec_id",
]
