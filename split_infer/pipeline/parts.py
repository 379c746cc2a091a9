"""The network parts of a bundle, loaded for a backend: ONNX Runtime from the bundle's ONNX
files, or torch rebuilt from its safetensors (the backbone cut at a split point, learned
bottlenecks from their weights). Torch is imported only when a torch part is asked for."""

from __future__ import annotations

from split_infer.bundle import Bundle, BundleConfiguration, BundleError, part_components
from split_infer.pipeline.backends import Backend, OrtBackend, backend_problem
from split_infer.pipeline.onnx_parts import TappedModel, chain

__all__ = ["PartLoader", "load_backbone", "part_bytes", "segment_backend"]


def part_bytes(bundle: Bundle, spec: str, tapped: list[TappedModel] | None = None) -> bytes:
    """The serialized ONNX model of a part spec (:func:`~split_infer.bundle.part_components`):
    its files read verified, its segments cut out of the bundle's tapped whole model, chained
    into one model. ``tapped`` (a list of at most one) caches the parsed whole model across
    calls."""
    cache = tapped if tapped is not None else []
    parts = []
    for component in part_components(spec):
        if isinstance(component, str):
            parts.append(bundle.read(component))
            continue
        if not cache:
            whole = bundle.manifest["model"].get("onnx")
            if not whole:
                raise BundleError(f"{bundle.path}: {spec!r} cuts the whole model, but the "
                                  "manifest names no tapped model.onnx")
            cache.append(TappedModel(bundle.read(whole)))
        parts.append(cache[0].part(*component))
    return chain(parts)


class PartLoader:
    """The edge and cloud part of each bundle configuration, loaded once per file.

    ``onnxruntime`` opens the bundle's ONNX files. ``torch`` rebuilds the same parts in eager
    PyTorch from the bundle's safetensors only (never pickle): the backbone cut at the split
    point, and for a learned configuration its bottleneck (rebuilt from the manifest's
    description, weights from its file, fine-tuned backbone weights when it has them), so
    ``head → encoder`` and ``decoder → tail`` compute what the ONNX parts compute. Torch is
    the backend to debug or extend a part with; ONNX Runtime is the fast one on CPU.
    """

    def __init__(self, bundle: Bundle, backend: str = "onnxruntime",
                 threads: int | None = None) -> None:
        problem = backend_problem(backend)
        if problem:
            raise ValueError(problem)
        self.bundle, self.backend, self.threads = bundle, backend, threads
        self._loaded: dict[str, Backend] = {}
        self._model = None
        self._tapped: list[TappedModel] = []  # the whole model, parsed once if a part cuts it

    def edge(self, config: BundleConfiguration) -> Backend:
        return self._part(config, config.edge_onnx, edge=True)

    def cloud(self, config: BundleConfiguration) -> Backend:
        return self._part(config, config.cloud_onnx, edge=False)

    def _part(self, config: BundleConfiguration, onnx_file: str, edge: bool) -> Backend:
        # Configurations that share an ONNX file share the part in either backend.
        if onnx_file not in self._loaded:
            if self.backend == "onnxruntime":
                self._loaded[onnx_file] = OrtBackend(
                    part_bytes(self.bundle, onnx_file, self._tapped), self.threads)
            else:
                from split_infer.pipeline.torch_backend import TorchBackend

                self._loaded[onnx_file] = TorchBackend(self._torch_module(config, edge))
        return self._loaded[onnx_file]

    def _backbone(self):
        if self._model is None:
            from split_infer.pipeline.parts import load_backbone

            self._model = load_backbone(self.bundle)
        return self._model

    def _torch_module(self, config: BundleConfiguration, edge: bool):
        from torch import nn

        learned = ((self.bundle.manifest.get("learned") or {}).get("configurations") or {})
        info = learned.get(config.id)
        model = self._backbone()
        if edge and config.split_point == 0:  # model[0:0]: the input image is what is sent
            return nn.Identity()
        if info is None:  # a baseline codec (or a plain channel prefix) on the backbone
            return model.segment(0, config.split_point) if edge else \
                model.segment(config.split_point, None)
        bottleneck, model = self._learned(info, model)
        if edge:
            return nn.Sequential(model.segment(0, config.split_point), bottleneck.encoder)
        return nn.Sequential(bottleneck.decoder, model.segment(config.split_point, None))

    def _learned(self, info: dict, model):
        import copy

        from safetensors.torch import load

        from split_infer.codecs.learned import build_method

        bottleneck = build_method(info["method"], info["feature_shape"], info["ratio"],
                                  wire_codec=info["wire_codec"], **info.get("options", {}))
        tensors = load(self.bundle.read(info["weights"]))
        bottleneck.load_state_dict({k.removeprefix("bottleneck."): v
                                    for k, v in tensors.items() if k.startswith("bottleneck.")})
        backbone = {k.removeprefix("backbone."): v for k, v in tensors.items()
                    if k.startswith("backbone.")}
        if backbone:  # fine-tuned with this bottleneck (Hu & K end to end): its own copy
            model = copy.deepcopy(model)
            model.net.load_state_dict(backbone, strict=True)
        return bottleneck.eval(), model.eval()


def load_backbone(bundle: Bundle):
    """The bundle's backbone as a :class:`~split_infer.models.SplittableModel` (eval mode),
    from its verified safetensors weights (slimmed widths included)."""
    from split_infer.codecs.learned.bbnet import load_slimmed_weights
    from split_infer.models import get_model

    model = get_model(bundle.model_name, num_classes=len(bundle.classes))
    load_slimmed_weights(model, bundle.read(bundle.manifest["model"]["weights"]))
    return model.eval()


def segment_backend(bundle: Bundle, start: int, end: int | None, *, backend: str = "onnxruntime",
                    threads: int | None = None, model=None) -> Backend:
    """A backend running the backbone's blocks ``(start, end]`` (``end=None``: to the logits).

    With ONNX Runtime and a bundle whose whole model is tapped at every split point
    (``manifest["model"]["onnx"]``), the segment is cut out of that graph: no torch needed.
    Otherwise it is cut from the backbone weights and exported; ``model`` reuses an already
    loaded backbone (:func:`load_backbone`)."""
    tapped = bundle.manifest["model"].get("onnx")
    if backend == "onnxruntime" and tapped and model is None:
        data = TappedModel(bundle.read(tapped)).part(start, end)
        return OrtBackend(data, threads)
    import torch

    from split_infer.pipeline.torch_backend import make_backend

    model = model if model is not None else load_backbone(bundle)
    part = model.segment(start, end)
    with torch.no_grad():
        example = model.segment(0, start)(torch.zeros(1, *model.input_shape)) if start else \
            torch.zeros(1, *model.input_shape)
    return make_backend(backend, part, example, threads=threads)
