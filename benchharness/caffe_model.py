"""Caffe models without Caffe: ``.caffemodel`` weights (+ optional ``deploy.prototxt``) to a trunk.

:func:`read_net` decodes a binary ``NetParameter`` in either encoding (``layer`` or the legacy V1
``layers``) into :class:`CaffeLayer` records; blobs may carry ``shape`` or the legacy
num/channels/height/width, and ``data`` or ``double_data``. When a text ``deploy.prototxt`` is
given, every layer's settings (group, stride, pad, LRN, pooling) and the layer order come from it,
and the weights from the caffemodel, matched by layer name.

:func:`to_trunk` matches the stages conv1..conv5, fc6, fc7 to layers by name (or through a
``layer_map``), derives the trunk's spec from the file (channels, kernels, groups, paddings, the
place of LRN, fc widths, leaky ReLUs, dropout), and returns the state dict under the stage names
together with what was used and what was not. A layer the trunk cannot represent that sits
between conv1 and the last used stage (a BatchNorm, a Concat ...) is an error, because ignoring
it would change what the network computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from .backbones import CONV_STAGES, FC_STAGES, STAGES, TrunkSpec
from .caffe_proto import messages, v1_type_name
from .interfaces import DataError

# V1 enum names -> the current string types, for the layers the reader looks at
V1_TO_TYPE = {"CONVOLUTION": "Convolution", "POOLING": "Pooling", "LRN": "LRN",
              "INNER_PRODUCT": "InnerProduct", "RELU": "ReLU", "DROPOUT": "Dropout",
              "DATA": "Data", "IMAGE_DATA": "ImageData", "WINDOW_DATA": "WindowData",
              "MEMORY_DATA": "MemoryData", "HDF5_DATA": "HDF5Data", "DUMMY_DATA": "DummyData",
              "SPLIT": "Split", "FLATTEN": "Flatten", "SILENCE": "Silence", "SOFTMAX": "Softmax",
              "SOFTMAX_LOSS": "SoftmaxWithLoss", "ACCURACY": "Accuracy", "CONCAT": "Concat",
              "ELTWISE": "Eltwise", "SIGMOID": "Sigmoid", "TANH": "TanH"}
# Layers that carry no computation the trunk lacks: inputs, plumbing, and the trunk's own kinds.
PASS_THROUGH = {"Input", "Data", "ImageData", "WindowData", "MemoryData", "HDF5Data", "DummyData",
                "Python", "Split", "Silence", "Flatten", "ReLU", "Dropout", "Pooling", "LRN",
                "Convolution", "InnerProduct"}
STAGE_TYPES = {**{s: "Convolution" for s in CONV_STAGES}, **{s: "InnerProduct" for s in FC_STAGES}}
PICKLE_OR_ZIP = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


@dataclass
class CaffeLayer:
    """One layer of a Caffe net: its name, type (``Convolution``...), blobs and settings."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``conv1 (Convolution) [96x3x11x11, 96]``."""
        shapes = ", ".join("x".join(map(str, b.shape)) for b in self.blobs)
        return f"{self.name} ({self.type})" + (f" [{shapes}]" if self.blobs else "")


@dataclass
class CaffeNet:
    """A decoded Caffe net: its layers in order and where they came from."""

    name: str
    layers: list[CaffeLayer]
    source: Path
    encoding: str  # "layer" or "layers (V1)"
    prototxt: Path | None = None
    transform: dict[str, Any] = field(default_factory=dict)  # scale / mean_value / mean_file

    def layer(self, name: str) -> CaffeLayer | None:
        """The layer called ``name``, or None."""
        return next((layer for layer in self.layers if layer.name == name), None)

    def listing(self) -> str:
        """Every layer with weights, for error messages."""
        held = [layer.describe() for layer in self.layers if layer.blobs]
        return "; ".join(held) if held else "no layer with weights"


def _blob_array(blob, where: str, source: Path) -> np.ndarray:
    if blob.shape.dim:
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))
    values = blob.double_data if len(blob.double_data) else blob.data
    count = math.prod(shape)
    if len(values) != count:
        raise DataError(source, f"{where} holds {len(values)} values but its shape {shape} needs {count}")
    return np.asarray(values, dtype=np.float32).reshape(shape)


def _pair(repeated, single_h: int, single_w: int, default: int) -> int:
    """Caffe's square settings: ``kernel_size: k`` / ``kernel_h``+``kernel_w`` (must be square)."""
    if single_h or single_w:
        if single_h != single_w:
            raise ValueError(f"non-square setting {single_h}x{single_w}")
        return int(single_h)
    values = list(repeated)
    if len(values) > 1 and len(set(values)) > 1:
        raise ValueError(f"non-square setting {values}")
    return int(values[0]) if values else default


def _f32(value: float) -> float:
    """A float32 field as the decimal written in the prototxt (1e-4, not 9.9999997e-05)."""
    return float(f"{value:.7g}")


def _layer_params(msg, type_name: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if type_name == "Convolution":
        p = msg.convolution_param
        params = {"num_output": p.num_output, "group": p.group, "bias_term": p.bias_term,
                  "kernel": _pair(p.kernel_size, p.kernel_h, p.kernel_w, 0),
                  "stride": _pair(p.stride, p.stride_h, p.stride_w, 1),
                  "pad": _pair(p.pad, p.pad_h, p.pad_w, 0)}
    elif type_name == "Pooling":
        p = msg.pooling_param
        params = {"method": p.pool, "kernel": p.kernel_size, "stride": p.stride, "pad": p.pad,
                  "global": p.global_pooling}
    elif type_name == "LRN":
        p = msg.lrn_param
        params = {"size": p.local_size, "alpha": _f32(p.alpha), "beta": _f32(p.beta), "k": _f32(p.k),
                  "region": p.norm_region}
    elif type_name == "InnerProduct":
        p = msg.inner_product_param
        params = {"num_output": p.num_output, "bias_term": p.bias_term, "transpose": p.transpose}
    elif type_name == "ReLU":
        params = {"negative_slope": _f32(msg.relu_param.negative_slope)}
    elif type_name == "Dropout":
        params = {"ratio": _f32(msg.dropout_param.dropout_ratio)}
    return params


def _layers_of(net, source: Path, with_blobs: bool) -> tuple[list[CaffeLayer], str, dict]:
    if len(net.layer) and len(net.layers):
        raise DataError(source, "holds layers in both the current and the V1 encoding")
    v1 = len(net.layers) > 0
    out, transform = [], {}
    for msg in (net.layers if v1 else net.layer):
        type_name = V1_TO_TYPE.get(v1_type_name(msg.type), v1_type_name(msg.type)) if v1 else msg.type
        try:
            params = _layer_params(msg, type_name)
        except ValueError as exc:
            raise DataError(source, f"layer {msg.name!r}: {exc}") from None
        blobs = [_blob_array(b, f"blob {i} of layer {msg.name!r}", source)
                 for i, b in enumerate(msg.blobs)] if with_blobs else []
        out.append(CaffeLayer(msg.name, type_name, blobs, params))
        if msg.HasField("transform_param") and not transform:
            t = msg.transform_param
            transform = {"scale": t.scale, "mean_value": list(t.mean_value), "mean_file": t.mean_file}
    return out, ("layers (V1)" if v1 else "layer"), transform


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, not a Caffe file") from None


def _parse_binary(path: Path, message_name: str):
    raw = _read_bytes(path)
    if raw.startswith(PICKLE_OR_ZIP):
        raise DataError(path, f"not a Caffe {message_name}: this is a pickle / torch.save file "
                              "(use a .caffemodel, or pass the torch checkpoint itself)")
    msg = messages()[message_name]()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise DataError(path, f"not a valid Caffe {message_name} (truncated or corrupt protobuf: "
                              f"{exc})") from None
    return msg


def read_prototxt(path: Path) -> Any:
    """A text-format ``NetParameter`` (fields the harness does not use are skipped)."""
    msg = messages()["NetParameter"]()
    try:
        text_format.Parse(_read_bytes(path).decode("utf-8", errors="replace"), msg,
                          allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise DataError(path, f"not a valid prototxt ({exc})") from None
    return msg


def read_net(path: Path, prototxt: Path | None = None) -> CaffeNet:
    """Decode a ``.caffemodel``; with ``prototxt``, layer settings and order come from it."""
    path = Path(path)
    net = _parse_binary(path, "NetParameter")
    layers, encoding, transform = _layers_of(net, path, with_blobs=True)
    if not layers:
        raise DataError(path, "holds no layers: not a Caffe model (a .caffemodel is a binary "
                              "NetParameter with the trained weights)")
    if prototxt is None:
        return CaffeNet(net.name, layers, path, encoding, None, transform)
    text = read_prototxt(prototxt)
    spec_layers, _, spec_transform = _layers_of(text, Path(prototxt), with_blobs=False)
    weights = {layer.name: layer.blobs for layer in layers}
    for layer in spec_layers:
        layer.blobs = weights.get(layer.name, [])
    missing = [layer.name for layer in layers if layer.blobs and layer.name not in
               {s.name for s in spec_layers}]
    # layers with weights that the prototxt does not name keep their place at the end, so they
    # are listed as unused instead of vanishing
    spec_layers += [layer for layer in layers if layer.name in missing]
    return CaffeNet(text.name or net.name, spec_layers, path, encoding, Path(prototxt),
                    spec_transform or transform)


def read_mean(path: Path) -> np.ndarray:
    """A mean ``.binaryproto`` (a ``BlobProto``) as an array [C, H, W] (Caffe's channel order)."""
    blob = _parse_binary(Path(path), "BlobProto")
    array = _blob_array(blob, "the mean blob", Path(path))
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise DataError(path, f"a mean image has shape [1,] C x H x W, this one {array.shape}")
    return array


@dataclass
class LoadedTrunk:
    """What :func:`to_trunk` found: the state under stage names, the spec fields read from the
    file, the input channels, and the layers used and left out."""

    state: dict[str, torch.Tensor]
    spec_fields: dict[str, Any]
    in_channels: int
    used: dict[str, str]  # stage -> Caffe layer name
    unused: list[str]  # layers with weights that no stage uses, as "name (Type) [shapes]"
    ignored_after: list[str]  # layers of other kinds after the last used stage (heads, losses)

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages the file provides, in order."""
        return tuple(s for s in STAGES if s in self.used)


def _stage_layers(net: CaffeNet, layer_map: dict[str, str]) -> dict[str, CaffeLayer]:
    unknown = set(layer_map) - set(STAGES)
    if unknown:
        raise DataError(net.source, f"layer_map names unknown stages {sorted(unknown)}; stages are {STAGES}")
    found = {}
    for stage in STAGES:
        name = layer_map.get(stage, stage)
        if not name:  # mapped to "": leave this stage random
            continue
        layer = net.layer(name)
        if layer is None:
            if stage in FC_STAGES and stage not in layer_map:
                continue  # fc6/fc7 are optional unless asked for
            raise DataError(net.source, f"no layer {name!r} for stage {stage}; the file holds: "
                                        f"{net.listing()} (map stages with layer_map)")
        fully_conv = stage in FC_STAGES and layer.type == "Convolution"  # FCN-style fc6/fc7
        if layer.type != STAGE_TYPES[stage] and not fully_conv:
            raise DataError(net.source, f"layer {name!r} for stage {stage} is a {layer.type}, "
                                        f"expected {STAGE_TYPES[stage]}")
        if len(layer.blobs) not in (1, 2):
            raise DataError(net.source, f"layer {name!r} ({stage}) holds {len(layer.blobs)} blobs, "
                                        "expected weights and bias")
        found[stage] = layer
    if "fc7" in found and "fc6" not in found:
        raise DataError(net.source, "fc7 without fc6: map fc7 to \"\" too, or give fc6")
    return found


def to_trunk(net: CaffeNet, layer_map: dict[str, str] | None = None) -> LoadedTrunk:
    """Match stages to layers and read the trunk's spec from the file (see the module doc)."""
    src = net.source
    layers = _stage_layers(net, dict(layer_map or {}))
    index = {layer.name: i for i, layer in enumerate(net.layers)}
    last_used = max(index[layer.name] for layer in layers.values())
    for layer in net.layers[index[layers["conv1"].name]:last_used]:
        if layer.type not in PASS_THROUGH:
            raise DataError(src, f"layer {layer.describe()} sits between conv1 and "
                                 f"{net.layers[last_used].name}; the CaffeNet trunk has no such "
                                 "layer (fold it into the convolution before converting)")
    state: dict[str, torch.Tensor] = {}
    channels, kernels, groups, paddings = [], [], [], []
    conv1_stride = 1
    cin = in_channels = layers["conv1"].blobs[0].shape[1]
    for i, stage in enumerate(CONV_STAGES):
        layer = layers[stage]
        w = layer.blobs[0]
        if w.ndim != 4 or w.shape[2] != w.shape[3]:
            raise DataError(src, f"layer {layer.name!r} ({stage}) has weights {w.shape}, expected "
                                 "a square convolution [out, in/group, k, k]")
        group = int(layer.params.get("group") or 1)
        if w.shape[1] * group != cin:
            raise DataError(src, f"layer {layer.name!r} ({stage}) has weights {w.shape} with group "
                                 f"{group}, but its input has {cin} channels")
        stride = int(layer.params.get("stride", 1))
        if i == 0:
            conv1_stride = stride
        elif stride != 1:
            raise DataError(src, f"layer {layer.name!r} ({stage}) has stride {stride}; the trunk "
                                 "has stride 1 after conv1")
        channels.append(w.shape[0])
        kernels.append(w.shape[2])
        groups.append(group)
        paddings.append(int(layer.params.get("pad", 0)))
        cin = w.shape[0]
        _put(state, stage, "conv", layer, (w.shape[0],), src)
    spec: dict[str, Any] = {"channels": tuple(channels), "kernels": tuple(kernels),
                            "groups": tuple(groups), "paddings": tuple(paddings),
                            "conv1_stride": conv1_stride, "conv1_padding": paddings[0]}
    spec.update(_between_stage_settings(net, layers, index, last_used, src))
    if "fc6" in layers:
        w6 = _fc_matrix(layers["fc6"])
        side = math.isqrt(w6.shape[1] // channels[4])
        if side * side * channels[4] != w6.shape[1]:
            raise DataError(src, f"layer {layers['fc6'].name!r} (fc6) takes {w6.shape[1]} inputs, "
                                 f"not conv5's {channels[4]} channels x a square pool")
        spec.update(pool_out=side, fc_dim=w6.shape[0])
        _put(state, "fc6", "fc", layers["fc6"], (w6.shape[0],), src, matrix=True)
        if "fc7" in layers:
            w7 = _fc_matrix(layers["fc7"])
            if w7.shape[1] != w6.shape[0]:
                raise DataError(src, f"layer {layers['fc7'].name!r} (fc7) takes {w7.shape[1]} "
                                     f"inputs, fc6 gives {w6.shape[0]}")
            spec["fc7_dim"] = w7.shape[0]
            _put(state, "fc7", "fc", layers["fc7"], (w7.shape[0],), src, matrix=True)
    used = {stage: layer.name for stage, layer in layers.items()}
    used_names = set(used.values())
    unused = [layer.describe() for layer in net.layers if layer.blobs and layer.name not in used_names]
    ignored = [layer.describe() for layer in net.layers[last_used + 1:]
               if layer.type not in PASS_THROUGH and not layer.blobs]
    return LoadedTrunk(state, spec, int(in_channels), used, unused, ignored)


def _fc_matrix(layer: CaffeLayer) -> np.ndarray:
    """An fc layer's weights as [out, in]: InnerProduct's (legacy shapes have leading 1s), or a
    fully convolutional fc's [out, C, k, k] flattened in the order fc6 flattens pool5 (C, H, W)."""
    w = layer.blobs[0]
    if layer.type == "Convolution":
        return w.reshape(w.shape[0], -1)
    w = w.reshape(-1, w.shape[-1])
    return w.T if layer.params.get("transpose") else w


def _put(state, stage, module, layer: CaffeLayer, bias_shape, src, matrix=False):
    weight = _fc_matrix(layer) if matrix else layer.blobs[0]
    state[f"{stage}.{module}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
    if len(layer.blobs) == 2:
        bias = layer.blobs[1].reshape(-1)
        if bias.shape != bias_shape:
            raise DataError(src, f"layer {layer.name!r} ({stage}) has a bias of {bias.size} values, "
                                 f"expected {bias_shape[0]}")
    else:  # bias_term: false -- a zero bias computes the same
        bias = np.zeros(bias_shape, dtype=np.float32)
    state[f"{stage}.{module}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))


def _lrn_settings(layer: CaffeLayer, src: Path) -> dict[str, Any]:
    if layer.params["region"] != 0:
        raise DataError(src, f"LRN {layer.name!r} is WITHIN_CHANNEL; the trunk's LRN is ACROSS_CHANNELS")
    p = layer.params
    return {"lrn_size": int(p["size"]), "lrn_alpha": float(p["alpha"]), "lrn_beta": float(p["beta"]),
            "lrn_k": float(p["k"])}


def _between_stage_settings(net: CaffeNet, layers: dict[str, CaffeLayer], index: dict[str, int],
                            last_used: int, src: Path) -> dict:
    """LRN place and settings, pools, ReLU slope and dropout read from the layers between stages.

    The trunk has a max-pool after conv1, conv2 and conv5, and either no LRN or one after conv1
    and one after conv2, both on the same side of the pool with the same settings; a file laid
    out otherwise is an error naming the layers found.
    """
    out: dict[str, Any] = {"ceil_pool": True, "lrn": "none"}
    places, lrns = [], []
    for a, b, pooled in (("conv1", "conv2", True), ("conv2", "conv3", True), ("conv3", "conv4", False),
                         ("conv4", "conv5", False)):
        between = net.layers[index[layers[a].name] + 1:index[layers[b].name]]
        found = [layer for layer in between if layer.type in ("Pooling", "LRN")]
        kinds = [layer.type for layer in found]
        allowed = ([["Pooling"], ["Pooling", "LRN"], ["LRN", "Pooling"]] if pooled else [[]])
        if kinds not in allowed:
            raise DataError(src, f"between {a} and {b} the file has {kinds or 'nothing'} "
                                 f"({', '.join(x.name for x in found) or '-'}); the CaffeNet trunk has "
                                 + ("a max-pool with an optional LRN" if pooled else "neither pool nor LRN")
                                 + " there")
        for layer in found:
            if layer.type == "Pooling":
                _check_pool(layer, src)
        if pooled:
            places.append("none" if len(kinds) == 1 else
                          "after_pool" if kinds[0] == "Pooling" else "before_pool")
            lrns += [layer for layer in found if layer.type == "LRN"]
    if places[0] != places[1]:
        raise DataError(src, f"LRN after conv1 is {places[0]} but after conv2 {places[1]}; the "
                             "trunk has the same layout after both")
    if lrns:
        settings = [_lrn_settings(layer, src) for layer in lrns]
        if settings[0] != settings[1]:
            raise DataError(src, f"LRNs {lrns[0].name!r} and {lrns[1].name!r} differ: {settings}")
        out.update(lrn=places[0], **settings[0])
    tail = net.layers[index[layers["conv5"].name] + 1:]
    pools = [layer for layer in tail if layer.type == "Pooling"]
    if pools:
        _check_pool(pools[0], src)
    dropouts = [layer.params["ratio"] for layer in tail if layer.type == "Dropout"]
    if dropouts:
        out["dropout"] = float(dropouts[0])
        out["dropout_after"] = True
    slopes = {round(float(layer.params["negative_slope"]), 6)
              for layer in net.layers[index[layers["conv1"].name]:last_used + 2] if layer.type == "ReLU"}
    if len(slopes) > 1:
        raise DataError(src, f"ReLUs with different negative slopes {sorted(slopes)}")
    if slopes:
        out["relu_slope"] = slopes.pop()
    return out


def _check_pool(layer: CaffeLayer, src: Path) -> None:
    p = layer.params
    if p["method"] != 0 or p["kernel"] != 3 or p["stride"] != 2 or p["pad"] != 0 or p["global"]:
        raise DataError(src, f"pool {layer.name!r} is not a 3x3 stride-2 max-pool without padding "
                             f"({p}); the CaffeNet trunk has only those")


def spec_from(base: TrunkSpec, loaded: LoadedTrunk) -> TrunkSpec:
    """``base`` with the fields the file determines."""
    return replace(base, **loaded.spec_fields)
