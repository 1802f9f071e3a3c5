"""Caffe files written by tests with the same protobuf messages the reader uses.

``caffenet_file`` writes a CaffeNet-shaped net (conv1..conv5 with groups, ReLUs, max-pools, LRN,
fc6, fc7, an ImageNet fc8 and a loss) with seeded random weights, in the current (``layer``) or
the legacy V1 (``layers``) encoding, and returns the weights it wrote by layer name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchharness.caffe_proto import V1_LAYER_TYPES, messages

SMALL = {"channels": (8, 16, 12, 12, 8), "fc": (32, 24)}  # CaffeNet's shape with fewer channels
FULL = {"channels": (96, 256, 384, 384, 256), "fc": (4096, 4096)}
GROUPS = (1, 2, 1, 2, 2)
KERNELS = (11, 5, 3, 3, 3)
PADS = (0, 2, 1, 1, 1)
V1_NAMES = {"Convolution": "CONVOLUTION", "ReLU": "RELU", "Pooling": "POOLING", "LRN": "LRN",
            "InnerProduct": "INNER_PRODUCT", "Dropout": "DROPOUT", "SoftmaxWithLoss": "SOFTMAX_LOSS",
            "Data": "DATA", "BatchNorm": None}


def caffenet_layers(sizes=SMALL, in_channels: int = 3, lrn_before_pool: bool = False, seed: int = 0,
                    extra_after_conv2: str | None = None, caffe_fillers: bool = False):
    """[(name, type, params, blobs)] of a CaffeNet-shaped net with random weights: He-scaled, or
    with ``caffe_fillers`` the scale of bvlc_reference_caffenet's train_val fillers (std 0.01
    conv, 0.005 fc), which keeps 0-255 input in a trainable range like a real model."""
    rng = np.random.default_rng(seed)
    layers = [("data", "Data", {}, [])]
    cin = in_channels
    for i, cout in enumerate(sizes["channels"]):
        k, g = KERNELS[i], GROUPS[i]
        std = 0.01 if caffe_fillers else (2 / (cin // g * k * k)) ** 0.5
        w = rng.normal(0, std, (cout, cin // g, k, k)).astype(np.float32)
        b = rng.normal(0.1, 0.05, (cout,)).astype(np.float32)
        conv = {"num_output": cout, "kernel_size": k, "group": g, "pad": PADS[i],
                "stride": 4 if i == 0 else 1}
        layers.append((f"conv{i + 1}", "Convolution", conv, [w, b]))
        layers.append((f"relu{i + 1}", "ReLU", {}, []))
        pool = (f"pool{i + 1}", "Pooling", {"kernel_size": 3, "stride": 2}, [])
        norm = (f"norm{i + 1}", "LRN", {"local_size": 5, "alpha": 1e-4, "beta": 0.75}, [])
        if i < 2:
            layers += [norm, pool] if lrn_before_pool else [pool, norm]
        elif i == 4:
            layers.append(pool)
        if i == 1 and extra_after_conv2:
            layers.append(("bn2", extra_after_conv2, {}, []))
        cin = cout
    fan = sizes["channels"][4] * 36
    for j, (name, out) in enumerate((("fc6", sizes["fc"][0]), ("fc7", sizes["fc"][1]), ("fc8", 10))):
        w = rng.normal(0, 0.005 if caffe_fillers else (2 / fan) ** 0.5, (out, fan)).astype(np.float32)
        b = rng.normal(0.1, 0.05, (out,)).astype(np.float32)
        layers.append((name, "InnerProduct", {"num_output": out}, [w, b]))
        if name != "fc8":
            layers.append((f"relu{6 + j}", "ReLU", {}, []))
            layers.append((f"drop{6 + j}", "Dropout", {"dropout_ratio": 0.5}, []))
        fan = out
    layers.append(("loss", "SoftmaxWithLoss", {}, []))
    return layers


def _set_params(msg, type_name: str, params: dict) -> None:
    if type_name == "Convolution":
        p = msg.convolution_param
        p.num_output, p.group = params["num_output"], params["group"]
        p.kernel_size.append(params["kernel_size"])
        p.stride.append(params["stride"])
        if params["pad"]:
            p.pad.append(params["pad"])
    elif type_name == "Pooling":
        msg.pooling_param.kernel_size = params["kernel_size"]
        msg.pooling_param.stride = params["stride"]
    elif type_name == "LRN":
        msg.lrn_param.local_size = params["local_size"]
        msg.lrn_param.alpha = params["alpha"]
        msg.lrn_param.beta = params["beta"]
    elif type_name == "InnerProduct":
        msg.inner_product_param.num_output = params["num_output"]
    elif type_name == "Dropout":
        msg.dropout_param.dropout_ratio = params["dropout_ratio"]


def net_message(layers, encoding: str = "layer", legacy_shapes: bool = False, double: bool = False):
    """A NetParameter holding ``layers`` in the given encoding (``layer`` or ``layers``)."""
    net = messages()["NetParameter"](name="CaffeNet")
    for name, type_name, params, blobs in layers:
        if encoding == "layer":
            msg = net.layer.add(name=name, type=type_name)
        else:
            msg = net.layers.add(name=name, type=V1_LAYER_TYPES[V1_NAMES[type_name]])
        _set_params(msg, type_name, params)
        for array in blobs:
            blob = msg.blobs.add()
            if legacy_shapes:  # num/channels/height/width, fc weights as 1 x 1 x out x in
                shape = (1,) * (4 - array.ndim) + array.shape
                blob.num, blob.channels, blob.height, blob.width = shape
            else:
                blob.shape.dim.extend(array.shape)
            (blob.double_data if double else blob.data).extend(array.reshape(-1).tolist())
    return net


def caffenet_file(path: Path, encoding: str = "layer", **kwargs) -> dict[str, list[np.ndarray]]:
    """Write a CaffeNet-shaped ``.caffemodel``; returns the blobs written by layer name."""
    legacy = kwargs.pop("legacy_shapes", encoding == "layers")
    double = kwargs.pop("double", False)
    layers = caffenet_layers(**kwargs)
    Path(path).write_bytes(net_message(layers, encoding, legacy, double).SerializeToString())
    return {name: blobs for name, _, _, blobs in layers if blobs}


def prototxt_text(layers, encoding: str = "layer") -> str:
    """The text format of a net without weights (a deploy.prototxt)."""
    from google.protobuf import text_format

    return text_format.MessageToString(net_message([(n, t, p, []) for n, t, p, _ in layers], encoding))
