"""Parts of one ONNX graph: the whole model exported once with every split point as an extra
output (a *tapped* model), and any head, tail or middle segment cut out of it on demand.

::

    input ─▶ block 1 ─▶ … ─▶ block k ─▶ … ─▶ block n ─▶ output
                       │            │
                   "split_1"    "split_k"          (extra graph outputs, one per split point)

    part(a, b) = the subgraph from "split_a" (or "input") to "split_b" (or "output"),
                 renamed input → output, as a standalone model for ONNX Runtime.

Cutting needs only the ``onnx`` package (``onnx.utils.Extractor``), not torch: a robot or a
middle stage of a chain gets any segment from the one copy of the backbone in its bundle. The
whole model's first output is the logits, so running the file as it is (fetching only that
output) is the unsplit model.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OUTPUT", "TappedModel", "chain", "tap_name"]

#: Name of the logits output of a tapped model (its first output).
OUTPUT = "output"


def tap_name(split_index: int) -> str:
    """The graph output holding the activation after ``split_index`` blocks."""
    return f"split_{int(split_index)}"


def _rename_value(model: Any, old: str, new: str) -> None:
    graph = model.graph
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


class TappedModel:
    """A tapped ONNX model (serialized bytes) and the segments cut from it.

    ``part(start, end)`` is blocks ``start+1 .. end`` (``start=0``: from the input image;
    ``end=None``: through the logits; ``(0, 0)``: no block, the input passed through), as
    serialized ONNX with one input ``input`` and one output ``output``. ValueError when the
    model has no tap for a requested split point.
    """

    def __init__(self, data: bytes) -> None:
        import onnx
        import onnx.utils

        model = onnx.load_from_string(data)
        self.outputs = [o.name for o in model.graph.output]
        self.input = model.graph.input[0].name
        self._input_info = model.graph.input[0]
        self._opsets = list(model.opset_import)
        self._ir_version = model.ir_version
        self._extractor = onnx.utils.Extractor(model)

    @property
    def split_points(self) -> list[int]:
        """The split indices this model has taps for."""
        return sorted(int(name.removeprefix("split_")) for name in self.outputs
                      if name.startswith("split_"))

    def part(self, start: int, end: int | None) -> bytes:
        if (start, end) == (0, 0):
            return self._identity()
        source = self.input if start == 0 else self._tap(start)
        target = self.outputs[0] if end is None else self._tap(end)
        model = self._extractor.extract_model([source], [target])
        _rename_value(model, source, "input")
        _rename_value(model, target, OUTPUT)
        return model.SerializeToString()

    def _identity(self) -> bytes:
        """The input passed through unchanged (the edge part of a split-0 configuration)."""
        import onnx
        import onnx.helper

        source = onnx.ValueInfoProto()
        source.CopyFrom(self._input_info)
        source.name = "input"
        target = onnx.ValueInfoProto()
        target.CopyFrom(self._input_info)
        target.name = OUTPUT
        graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["input"], [OUTPUT])],
                                       "input", [source], [target])
        return onnx.helper.make_model(graph, opset_imports=self._opsets,
                                      ir_version=self._ir_version).SerializeToString()

    def _tap(self, split_index: int) -> str:
        name = tap_name(split_index)
        if name not in self.outputs:
            raise ValueError(f"the tapped model has no output {name!r} (taps: "
                             f"{self.split_points})")
        return name


def chain(parts: list[bytes]) -> bytes:
    """Serialized single-input, single-output ONNX models run one after the other, as one
    model (input ``input``, output ``output``): a backbone segment and a learned encoder, or a
    decoder and the rest of the backbone, become one ONNX Runtime session, so the runtime
    optimises across the seam. One part is returned unchanged."""
    if len(parts) == 1:
        return parts[0]
    import onnx
    import onnx.compose

    merged = onnx.load_from_string(parts[0])
    for i, data in enumerate(parts[1:], start=1):
        following = onnx.load_from_string(data)
        # Both sides have values named "input"/"output"; prefixes keep every name unique.
        if i == 1:
            merged = onnx.compose.add_prefix(merged, "p0_")
        following = onnx.compose.add_prefix(following, f"p{i}_")
        merged = onnx.compose.merge_models(
            merged, following,
            io_map=[(merged.graph.output[0].name, following.graph.input[0].name)])
    _rename_value(merged, merged.graph.input[0].name, "input")
    _rename_value(merged, merged.graph.output[0].name, OUTPUT)
    return merged.SerializeToString()
