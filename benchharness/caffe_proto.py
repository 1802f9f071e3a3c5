"""The few Caffe protobuf messages the harness reads, defined here without Caffe or ``protoc``.

A ``.caffemodel`` is a binary ``caffe.NetParameter``; a ``deploy.prototxt`` is the same message
in protobuf's text format; a mean ``.binaryproto`` is a ``caffe.BlobProto``. The message
definitions below hold only the fields the harness uses, under Caffe's own field numbers and
names (package ``caffe``), so the ``protobuf`` package decodes the real files; every other field
of a real file is skipped (binary) or ignored (text). They live in a private descriptor pool, so
they never clash with a ``caffe_pb2`` a user has imported.

Field numbers follow BVLC Caffe's ``src/caffe/proto/caffe.proto``; ``layer`` (100) is the
current encoding of a net's layers, ``layers`` (2) the legacy V1 one with an enum ``type``.
"""

from __future__ import annotations

from functools import lru_cache

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED
TYPES = {"string": F.TYPE_STRING, "float": F.TYPE_FLOAT, "double": F.TYPE_DOUBLE,
         "int64": F.TYPE_INT64, "uint32": F.TYPE_UINT32, "uint64": F.TYPE_UINT64,
         "bool": F.TYPE_BOOL}

# The V1 layer types (caffe.proto's V1LayerParameter.LayerType), so that text prototxts in the
# V1 encoding parse whatever layers they hold.
V1_LAYER_TYPES = {
    "NONE": 0, "ACCURACY": 1, "BNLL": 2, "CONCAT": 3, "CONVOLUTION": 4, "DATA": 5, "DROPOUT": 6,
    "EUCLIDEAN_LOSS": 7, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "IM2COL": 11,
    "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "POOLING": 17, "RELU": 18, "SIGMOID": 19, "SOFTMAX": 20,
    "SOFTMAX_LOSS": 21, "SPLIT": 22, "TANH": 23, "WINDOW_DATA": 24, "ELTWISE": 25, "POWER": 26,
    "SIGMOID_CROSS_ENTROPY_LOSS": 27, "HINGE_LOSS": 28, "MEMORY_DATA": 29, "ARGMAX": 30,
    "THRESHOLD": 31, "DUMMY_DATA": 32, "SLICE": 33, "MVN": 34, "ABSVAL": 35, "SILENCE": 36,
    "CONTRASTIVE_LOSS": 37, "EXP": 38, "DECONVOLUTION": 39,
}

# message -> [(field, number, label, type or ".caffe.Message" / enum, default or None, packed)]
_MESSAGES = {
    "BlobShape": [("dim", 1, REPEATED, "int64", None, True)],
    "BlobProto": [
        ("num", 1, OPTIONAL, "int64", None, False), ("channels", 2, OPTIONAL, "int64", None, False),
        ("height", 3, OPTIONAL, "int64", None, False), ("width", 4, OPTIONAL, "int64", None, False),
        ("data", 5, REPEATED, "float", None, True), ("diff", 6, REPEATED, "float", None, True),
        ("shape", 7, OPTIONAL, ".caffe.BlobShape", None, False),
        ("double_data", 8, REPEATED, "double", None, True),
    ],
    "ConvolutionParameter": [
        ("num_output", 1, OPTIONAL, "uint32", None, False),
        ("bias_term", 2, OPTIONAL, "bool", "true", False),
        ("pad", 3, REPEATED, "uint32", None, False),
        ("kernel_size", 4, REPEATED, "uint32", None, False),
        ("group", 5, OPTIONAL, "uint32", "1", False),
        ("stride", 6, REPEATED, "uint32", None, False),
        ("pad_h", 9, OPTIONAL, "uint32", None, False), ("pad_w", 10, OPTIONAL, "uint32", None, False),
        ("kernel_h", 11, OPTIONAL, "uint32", None, False), ("kernel_w", 12, OPTIONAL, "uint32", None, False),
        ("stride_h", 13, OPTIONAL, "uint32", None, False), ("stride_w", 14, OPTIONAL, "uint32", None, False),
    ],
    "PoolingParameter": [
        ("pool", 1, OPTIONAL, ".caffe.PoolingParameter.PoolMethod", "MAX", False),
        ("kernel_size", 2, OPTIONAL, "uint32", None, False),
        ("stride", 3, OPTIONAL, "uint32", "1", False),
        ("pad", 4, OPTIONAL, "uint32", "0", False),
        ("global_pooling", 12, OPTIONAL, "bool", "false", False),
    ],
    "LRNParameter": [
        ("local_size", 1, OPTIONAL, "uint32", "5", False),
        ("alpha", 2, OPTIONAL, "float", "1", False),
        ("beta", 3, OPTIONAL, "float", "0.75", False),
        ("norm_region", 4, OPTIONAL, ".caffe.LRNParameter.NormRegion", "ACROSS_CHANNELS", False),
        ("k", 5, OPTIONAL, "float", "1", False),
    ],
    "InnerProductParameter": [
        ("num_output", 1, OPTIONAL, "uint32", None, False),
        ("bias_term", 2, OPTIONAL, "bool", "true", False),
        ("transpose", 6, OPTIONAL, "bool", "false", False),
    ],
    "ReLUParameter": [("negative_slope", 1, OPTIONAL, "float", "0", False)],
    "DropoutParameter": [("dropout_ratio", 1, OPTIONAL, "float", "0.5", False)],
    "TransformationParameter": [
        ("scale", 1, OPTIONAL, "float", "1", False),
        ("crop_size", 3, OPTIONAL, "uint64", "0", False),
        ("mean_file", 4, OPTIONAL, "string", None, False),
        ("mean_value", 5, REPEATED, "float", None, False),
    ],
    "LayerParameter": [
        ("name", 1, OPTIONAL, "string", None, False), ("type", 2, OPTIONAL, "string", None, False),
        ("bottom", 3, REPEATED, "string", None, False), ("top", 4, REPEATED, "string", None, False),
        ("blobs", 7, REPEATED, ".caffe.BlobProto", None, False),
        ("transform_param", 100, OPTIONAL, ".caffe.TransformationParameter", None, False),
        ("convolution_param", 106, OPTIONAL, ".caffe.ConvolutionParameter", None, False),
        ("dropout_param", 108, OPTIONAL, ".caffe.DropoutParameter", None, False),
        ("inner_product_param", 117, OPTIONAL, ".caffe.InnerProductParameter", None, False),
        ("lrn_param", 118, OPTIONAL, ".caffe.LRNParameter", None, False),
        ("pooling_param", 121, OPTIONAL, ".caffe.PoolingParameter", None, False),
        ("relu_param", 123, OPTIONAL, ".caffe.ReLUParameter", None, False),
    ],
    "V1LayerParameter": [
        ("bottom", 2, REPEATED, "string", None, False), ("top", 3, REPEATED, "string", None, False),
        ("name", 4, OPTIONAL, "string", None, False),
        ("type", 5, OPTIONAL, ".caffe.V1LayerParameter.LayerType", None, False),
        ("blobs", 6, REPEATED, ".caffe.BlobProto", None, False),
        ("convolution_param", 10, OPTIONAL, ".caffe.ConvolutionParameter", None, False),
        ("dropout_param", 12, OPTIONAL, ".caffe.DropoutParameter", None, False),
        ("inner_product_param", 17, OPTIONAL, ".caffe.InnerProductParameter", None, False),
        ("lrn_param", 18, OPTIONAL, ".caffe.LRNParameter", None, False),
        ("pooling_param", 19, OPTIONAL, ".caffe.PoolingParameter", None, False),
        ("relu_param", 30, OPTIONAL, ".caffe.ReLUParameter", None, False),
        ("transform_param", 36, OPTIONAL, ".caffe.TransformationParameter", None, False),
    ],
    "NetParameter": [
        ("name", 1, OPTIONAL, "string", None, False),
        ("layers", 2, REPEATED, ".caffe.V1LayerParameter", None, False),
        ("input", 3, REPEATED, "string", None, False),
        ("input_dim", 4, REPEATED, "int64", None, False),
        ("input_shape", 8, REPEATED, ".caffe.BlobShape", None, False),
        ("layer", 100, REPEATED, ".caffe.LayerParameter", None, False),
    ],
}
_ENUMS = {
    "PoolingParameter": ("PoolMethod", {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}),
    "LRNParameter": ("NormRegion", {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}),
    "V1LayerParameter": ("LayerType", V1_LAYER_TYPES),
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="benchharness_caffe.proto", package="caffe",
                                            syntax="proto2")
    for message_name, field_rows in _MESSAGES.items():
        message = fd.message_type.add(name=message_name)
        if message_name in _ENUMS:
            enum_name, values = _ENUMS[message_name]
            enum = message.enum_type.add(name=enum_name)
            for value_name, number in values.items():
                enum.value.add(name=value_name, number=number)
        for name, number, label, kind, default, packed in field_rows:
            field = message.field.add(name=name, number=number, label=label)
            if kind in TYPES:
                field.type = TYPES[kind]
            else:
                field.type_name = kind
                field.type = F.TYPE_ENUM if kind.count(".") == 3 else F.TYPE_MESSAGE
            if default is not None:
                field.default_value = default
            if packed:
                field.options.packed = True
    return fd


@lru_cache(maxsize=1)
def messages() -> dict[str, type]:
    """The message classes by name: ``NetParameter``, ``BlobProto``, ``LayerParameter`` ..."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))
            for name in _MESSAGES}


def v1_type_name(number: int) -> str:
    """The V1 enum name of a layer type number (``4`` -> ``CONVOLUTION``)."""
    for name, value in V1_LAYER_TYPES.items():
        if value == number:
            return name
    return f"V1_TYPE_{number}"
