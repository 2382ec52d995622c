#!/usr/bin/python3
"""Writes hand-made ONNX graphs at the edges of what the importer reads (tests/test_onnx.cpp,
"ONNX import: hand-made graphs at the edges"): ones it must compute as ONNX Runtime does, and ones
it must refuse. torch.onnx never writes these, so they are built node by node.

usage: /usr/bin/python3 tests/onnx/make_edge_models.py OUTDIR
Writes OUTDIR/NAME.onnx and OUTDIR/cases.json: [{name, file, expect: "ok" | "error", input_shape,
message_contains}]. Deterministic (seeded weights).
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, checker, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(5)
cases = []


def const(name, shape, scale=0.5):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def f32(name, values):
    return numpy_helper.from_array(np.array(values, np.float32), name)


def save(name, shape, nodes, inits, expect, message="", check=True, opset=13, external=False, functions=(), channels_last=False,
         input_scale=1.0):
    """external: the data of initializers over 64 bytes in NAME.onnx.data beside the file (as
    torch's dynamo exporter saves by default; ONNX Runtime's shape inference reads small integer
    tensors only from inside the file). onnx 1.12's checker knows opsets up to 17 only.
    channels_last: the file's input is N,H,W,C for `shape` C,H,W (tf2onnx's Keras models).
    input_scale: imported with --input-scale (the file reads pixel values 0..255, say)."""
    file_shape = [shape[1], shape[2], shape[0]] if channels_last else shape
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"] + file_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K"])], inits)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(f.domain, 1) for f in functions]
    model = helper.make_model(graph, opset_imports=imports, functions=list(functions))
    if check and opset <= 17:
        checker.check_model(model)
    path = os.path.join(out, name + ".onnx")
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=name + ".onnx.data", size_threshold=64)
    else:
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
    cases.append({"name": name, "file": name + ".onnx", "expect": expect, "input_shape": shape, "message_contains": message,
                  "channels_last": channels_last, "input_scale": input_scale})


def head(x, channels):  # GlobalAveragePool, Flatten, Gemm to 5 classes
    return ([helper.make_node("GlobalAveragePool", [x], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "hw", "hb"], ["y"], transB=1)],
            [const("hw", [5, channels]), const("hb", [5])])


# A Pad before a SAME conv of stride 2: SAME pads the padded size (9x8 here, not 8x8).
for mode in ["SAME_UPPER", "SAME_LOWER"]:
    nodes, inits = head("c", 4)
    save(f"pad_then_{mode.lower()}_stride2", [3, 8, 8],
         [helper.make_node("Pad", ["x", "pads"], ["p"]),
          helper.make_node("Conv", ["p", "w", "b"], ["c"], kernel_shape=[3, 3], strides=[2, 2], auto_pad=mode)] + nodes,
         [numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 0, 0, 0], np.int64), "pads"), const("w", [4, 3, 3, 3]), const("b", [4])] + inits, "ok")

# A HardSigmoid that x * HardSigmoid(x) reads through an Identity, and an Add reads as well: not a
# hardswish (the HardSigmoid's output is still needed).
save("hardsigmoid_read_twice", [6],
     [helper.make_node("Gemm", ["x", "w"], ["g"], transB=1),
      helper.make_node("HardSigmoid", ["g"], ["hs"], alpha=1 / 6, beta=0.5),
      helper.make_node("Identity", ["hs"], ["hsi"]),
      helper.make_node("Mul", ["g", "hsi"], ["hw"]),
      helper.make_node("Add", ["hw", "hs"], ["y"])],
     [const("w", [4, 6])], "ok")

# Weights through Cast(int32) and back: truncated toward zero, as ONNX Runtime does.
save("weights_cast_to_int", [6],
     [helper.make_node("Cast", ["w"], ["wi"], to=TensorProto.INT32), helper.make_node("Cast", ["wi"], ["wf"], to=TensorProto.FLOAT),
      helper.make_node("MatMul", ["x", "wf"], ["y"])],
     [const("w", [6, 4], scale=3.0)], "ok")

# A bias Add on a Gemm output read through an Identity, by nothing else: the Gemm's bias.
save("bias_through_identity", [6],
     [helper.make_node("Gemm", ["x", "w"], ["g"], transB=1), helper.make_node("Identity", ["g"], ["gi"]),
      helper.make_node("Add", ["gi", "b"], ["y"])],
     [const("w", [4, 6]), const("b", [4])], "ok")

# A bias Add on a Gemm output that a Relu also reads (under another name, through an Identity):
# folding the bias into the Gemm would give the Relu the bias too.
save("bias_on_an_output_read_twice", [6],
     [helper.make_node("Gemm", ["x", "w"], ["g"], transB=1), helper.make_node("Identity", ["g"], ["gi"]),
      helper.make_node("Add", ["gi", "b"], ["gb"]), helper.make_node("Relu", ["g"], ["r"]), helper.make_node("Add", ["r", "gb"], ["y"])],
     [const("w", [4, 6]), const("b", [4])], "error", "only an add of two computed tensors")

# An attribute of the wrong type (protobuf would read the FLOAT field as 0).
alpha = helper.make_attribute("alpha", 2)  # an INT where ONNX has a FLOAT
gemm = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
gemm.attribute.append(alpha)
save("gemm_alpha_stored_as_int", [6], [gemm], [const("w", [4, 6])], "error", "attribute 'alpha' is stored as INT", check=False)

# Values ONNX's checker lets through that would divide by zero.
nodes, inits = head("c", 4)
save("conv_group_0", [4, 8, 8], [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], group=0)] + nodes,
     [const("w", [4, 4, 3, 3])] + inits, "error", "group 0 must be at least 1")
nodes, inits = head("m", 3)
save("maxpool_stride_0", [3, 8, 8], [helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[2, 2], strides=[0, 0])] + nodes, inits,
     "error", "kernel_shape and strides must be at least 1")
# auto_pad VALID with pads: ONNX allows one or the other.
save("avgpool_valid_with_pads", [3, 8, 8],
     [helper.make_node("AveragePool", ["x"], ["m"], kernel_shape=[3, 3], auto_pad="VALID", pads=[1, 1, 1, 1])] + nodes, inits,
     "error", "auto_pad VALID and pads together")
save("avgpool_valid_with_end_pads", [3, 8, 8],
     [helper.make_node("AveragePool", ["x"], ["m"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID", pads=[0, 0, 1, 1])] + nodes, inits,
     "error", "auto_pad VALID and pads together")
# A Pad, then an AveragePool with end pads of its own: not one padding to count.
save("pad_then_avgpool_with_end_pads", [3, 6, 6],
     [helper.make_node("Pad", ["x", "pads"], ["p"]),
      helper.make_node("AveragePool", ["p"], ["m"], kernel_shape=[4, 4], strides=[4, 4], pads=[0, 0, 2, 2], count_include_pad=0)] + nodes,
     [numpy_helper.from_array(np.array([0, 0, 2, 2, 0, 0, 2, 2], np.int64), "pads")] + inits, "error", "may follow a Pad")
save("weights_cast_to_float16", [6],
     [helper.make_node("Cast", ["w"], ["wh"], to=TensorProto.FLOAT16), helper.make_node("Cast", ["wh"], ["wf"], to=TensorProto.FLOAT),
      helper.make_node("MatMul", ["x", "wf"], ["y"])],
     [const("w", [6, 4])], "error", "a cast to FLOAT16 is not supported")

# Pads larger at the end (TensorFlow's SAME, shrink's export of ceil mode): a ceil-mode pool when it
# counts the same windows (a max, an average that leaves the padding out); otherwise refused.
nodes, inits = head("m", 3)
save("maxpool_same_upper_pads", [3, 7, 9],
     [helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])] + nodes, inits, "ok")
save("avgpool_end_pads_without_the_padding", [3, 8, 8],
     [helper.make_node("AveragePool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 2, 2], count_include_pad=0)] + nodes,
     inits, "ok")
save("avgpool_end_pads_counting_the_padding", [3, 7, 7],
     [helper.make_node("AveragePool", ["x"], ["m"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], count_include_pad=1)] + nodes,
     inits, "error", "count_include_pad with more padding at the end")
save("maxpool_end_pads_of_no_ceil_pool", [3, 8, 8],  # stride 1: no ceil-mode pool reaches into the end padding
     [helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1])] + nodes, inits,
     "error", "with no ceil-mode pool of the same windows")

# Channel slices and splits as other exporters write them: negative bounds, an end past the channels,
# axes given negatively, a whole-range slice of the spatial axes too; Split by sizes and in equal
# parts. Refused: steps, spatial slices, an empty slice, sizes that do not add up.
def i64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


nodes, inits = head("cat", 6)
save("slice_and_split_channels", [6, 5, 5],
     [helper.make_node("Slice", ["x", "s0", "e0", "a0"], ["t0"]),         # channels -4 .. end: 2..5
      helper.make_node("Slice", ["x", "s1", "e1", "a1", "st1"], ["t1"]),  # channels 0..1 and all rows (axis -2)
      helper.make_node("Split", ["x", "sizes"], ["p0", "p1"], axis=1),
      helper.make_node("Split", ["p1"], ["q0", "q1"], axis=-3),
      helper.make_node("Concat", ["t1", "q1", "p0", "t0"], ["c0"], axis=1),  # 2 + 2 + 2 + 4 channels
      helper.make_node("Conv", ["c0", "w"], ["cat"], kernel_shape=[1, 1])] + nodes,
     [i64("s0", [-4]), i64("e0", [2**63 - 1]), i64("a0", [1]), i64("s1", [0, 0]), i64("e1", [2, 99]), i64("a1", [1, -2]), i64("st1", [1, 1]),
      i64("sizes", [2, 4]), const("w", [6, 10, 1, 1])] + inits, "ok")
for name, starts, ends, axes, steps, message in [("slice_step_2", [0], [6], [1], [2], "only steps of 1"),
                                                 ("slice_rows", [1], [4], [2], [1], "only a slice of channels"),
                                                 ("slice_empty", [4], [2], [1], [1], "keeps no channels")]:
    nodes, inits = head("t", 6)
    save(name, [6, 5, 5], [helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["t"])] + nodes,
         [i64("s", starts), i64("e", ends), i64("a", axes), i64("st", steps)] + inits, "error", message)
nodes, inits = head("p0", 2)
save("split_sizes_not_adding_up", [6, 5, 5], [helper.make_node("Split", ["x", "sizes"], ["p0", "p1"], axis=1)] + nodes,
     [i64("sizes", [2, 3])] + inits, "error", "must be positive, one per output, and add up to the 6 channels", check=False)
# GlobalMaxPool (torch writes a MaxPool of the whole image instead), kept 4-D and flattened by Gemm's reader.
save("global_max_pool", [6, 5, 4],
     [helper.make_node("GlobalMaxPool", ["x"], ["gm"]), helper.make_node("Flatten", ["gm"], ["f"]),
      helper.make_node("Gemm", ["f", "hw", "hb"], ["y"], transB=1)], [const("hw", [5, 6]), const("hb", [5])], "ok")
# A channel shuffle of 3 groups with the batch copied (0) and the channels given as -1; a Reshape to
# 5 dimensions that is no shuffle's, and a shuffle's view read by something else, are refused.
nodes, inits = head("sh", 6)
save("shuffle_3_groups", [6, 4, 4],
     [helper.make_node("Reshape", ["x", "grp"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
      helper.make_node("Reshape", ["t", "back"], ["sh"])] + nodes, [i64("grp", [0, 3, 2, 4, 4]), i64("back", [0, -1, 4, 4])] + inits, "ok")
save("reshape_5d_not_a_shuffle", [6, 4, 4],
     [helper.make_node("Reshape", ["x", "grp"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
      helper.make_node("Reshape", ["t", "back"], ["sh"])] + nodes, [i64("grp", [0, 3, 2, 2, 8]), i64("back", [0, -1, 4, 4])] + inits,
     "error", "is not a channel shuffle's")
save("shuffle_view_read_by_relu", [6, 4, 4],
     [helper.make_node("Reshape", ["x", "grp"], ["r"]), helper.make_node("Relu", ["r"], ["rr"]),
      helper.make_node("Transpose", ["rr"], ["t"], perm=[0, 2, 1, 3, 4]), helper.make_node("Reshape", ["t", "back"], ["sh"])] + nodes,
     [i64("grp", [0, 3, 2, 4, 4]), i64("back", [0, -1, 4, 4])] + inits, "error", "reads a channel shuffle's intermediate tensor")
nodes, inits = head("c", 6)
save("conv_reads_shuffle_view", [6, 4, 4],
     [helper.make_node("Reshape", ["x", "grp"], ["r"]), helper.make_node("Conv", ["r", "w"], ["c"], kernel_shape=[1, 1])] + nodes,
     [i64("grp", [0, 3, 2, 4, 4]), const("w", [6, 6, 1, 1])] + inits, "error", "reads a channel shuffle's intermediate tensor", check=False)
# Shape arithmetic on an empty vector (Shape with start = end).
nodes, inits = head("x", 6)
save("arithmetic_on_empty_shape", [6, 4, 4],
     [helper.make_node("Shape", ["x"], ["s"], start=1, end=1), helper.make_node("Add", ["s", "one"], ["t"]),
      helper.make_node("Reshape", ["x", "t"], ["unused"])] + nodes, [i64("one", [1])] + inits, "error", "arithmetic on an empty constant", check=False)

# Opsets 18 to 23, as torch's dynamo exporter writes them: Pad and ReduceMean with their axes as
# inputs (negative), Split into num_outputs parts (the last one smaller), Clip bounds as inputs,
# Shape with start and end, a Linear as a Transpose of its weight and MatMul, AveragePool's
# dilations; weights in an external data file.
nodes, inits = head("cat", 5)
save("opset18_axes_inputs_and_split", [5, 6, 6],
     [helper.make_node("Pad", ["x", "pads", "", "pad_axes"], ["p"]),
      helper.make_node("Conv", ["p", "w"], ["c"], kernel_shape=[3, 3]), helper.make_node("Relu", ["c"], ["r"]),
      helper.make_node("Split", ["r"], ["s0", "s1"], axis=1, num_outputs=2),
      helper.make_node("Concat", ["s1", "s0"], ["cat"], axis=1)] + nodes,
     [i64("pads", [1, 1, 1, 1]), i64("pad_axes", [-2, -1]), const("w", [5, 5, 3, 3])] + inits, "ok", opset=18)
dynamo_style = [
    helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["bn"], training_mode=0),
    helper.make_node("Clip", ["bn", "lo", "hi"], ["r6"]),
    helper.make_node("MaxPool", ["r6"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[2, 2], strides=[2, 2], dilations=[1, 1]),
    helper.make_node("ReduceMean", ["ap", "mean_axes"], ["gm"], keepdims=1),
    helper.make_node("Shape", ["gm"], ["n"], start=0, end=1), helper.make_node("Concat", ["n", "minus1"], ["target"], axis=0),
    helper.make_node("Reshape", ["gm", "target"], ["f"]),
    helper.make_node("Transpose", ["lw"], ["lwt"], perm=[1, 0]), helper.make_node("MatMul", ["f", "lwt"], ["mm"]),
    helper.make_node("Add", ["mm", "lb"], ["y"])]
dynamo_inits = [const("w", [6, 3, 3, 3]), const("b", [6]), const("scale", [6]), const("shift", [6]), const("mean", [6]),
                numpy_helper.from_array(rng.uniform(0.5, 2, 6).astype(np.float32), "var"),
                numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi"),
                i64("mean_axes", [-1, -2]), i64("minus1", [-1]), const("lw", [5, 6]), const("lb", [5])]
nodes, inits = head("m", 6)
save("opset18_mish", [3, 5, 5], [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), helper.make_node("Mish", ["c"], ["m"])] + nodes,
     [const("w", [6, 3, 3, 3], scale=1.5)] + inits, "ok", opset=18)
# ReLU6 as Relu then Min(6), ReLU as Max(x, 0); a Min of anything else is refused.
nodes, inits = head("m", 6)
save("relu6_as_relu_min_max", [3, 5, 5],
     [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), helper.make_node("Max", ["c", "zero"], ["r0"]),
      helper.make_node("Conv", ["r0", "w2"], ["c2"], kernel_shape=[1, 1]), helper.make_node("Relu", ["c2"], ["r"]),
      helper.make_node("Min", ["r", "six"], ["m"])] + nodes,
     [const("w", [6, 3, 3, 3], scale=2.0), const("w2", [6, 6, 1, 1], scale=3.0), f32("zero", 0.0), f32("six", 6.0)] + inits, "ok", opset=18)
save("min_of_a_conv", [3, 5, 5], [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), helper.make_node("Min", ["c", "six"], ["m"])] + nodes,
     [const("w", [6, 3, 3, 3]), f32("six", 6.0)] + inits, "error", "only Max(x, 0) (a relu) and Min(relu(x), 6) (a relu6) are supported", opset=18)
save("opset20_gelu", [3, 5, 5], [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), helper.make_node("Gelu", ["c"], ["m"])] + nodes,
     [const("w", [6, 3, 3, 3], scale=1.5)] + inits, "ok", opset=20)
save("opset20_gelu_tanh", [3, 5, 5], [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
                                      helper.make_node("Gelu", ["c"], ["m"], approximate="tanh")] + nodes,
     [const("w", [6, 3, 3, 3], scale=1.5)] + inits, "error", "only the exact GELU", opset=20)
save("erf_alone", [3, 5, 5], [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), helper.make_node("Erf", ["c"], ["m"])] + nodes,
     [const("w", [6, 3, 3, 3])] + inits, "error", "only as part of a GELU")
for opset in (20, 22, 23):
    save(f"opset{opset}_dynamo_style", [3, 8, 8], dynamo_style, dynamo_inits, "ok", opset=opset)
save("opset23_external_data", [3, 8, 8], dynamo_style, dynamo_inits, "ok", opset=23, external=True)
save("opset24", [3, 8, 8], dynamo_style, dynamo_inits, "error", "opset 24 is not supported", opset=24)
# A call of a function the model defines (the dynamo exporter without its optimize step).
relu_function = helper.make_function("pkg.custom", "MyRelu", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
                                     [helper.make_opsetid("", 18)])
nodes, inits = head("r", 3)
save("local_function", [3, 4, 4], [helper.make_node("MyRelu", ["x"], ["r"], domain="pkg.custom")] + nodes, inits, "error",
     "calls the model's own function pkg.custom::MyRelu", opset=18, functions=[relu_function])
# External data that is gone, or shorter than the tensors it holds.
for name, damage in [("external_data_missing", lambda data: os.remove(data)),
                     ("external_data_truncated", lambda data: os.truncate(data, os.path.getsize(data) // 2))]:
    save(name, [3, 8, 8], dynamo_style, dynamo_inits, "error", "cannot open its external data file" if "missing" in name else "truncated?",
         opset=18, external=True)
    damage(os.path.join(out, name + ".onnx.data"))

# Keras models as tf2onnx writes them: an N,H,W,C input, normalized there (a per-channel Sub and
# Div, Rescaling's Mul and Add), transposed to N,C,H,W for the convs, transposed back before the
# Flatten (features in H,W,C order) or reduced over axes 1, 2; the Dense layers as MatMul + Add.
keras_start = [helper.make_node("Sub", ["x", "mean"], ["xs"]), helper.make_node("Div", ["xs", "std"], ["xd"]),
               helper.make_node("Mul", ["scale", "xd"], ["xm"]), helper.make_node("Add", ["xm", "offset"], ["xa"]),
               helper.make_node("Transpose", ["xa"], ["xt"], perm=[0, 3, 1, 2]),
               helper.make_node("Conv", ["xt", "w1", "b1"], ["c1"], kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
               helper.make_node("Relu", ["c1"], ["r1"]), helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
               helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
               helper.make_node("Relu", ["c2"], ["r2"]), helper.make_node("Transpose", ["r2"], ["nhwc"], perm=[0, 2, 3, 1])]
keras_inits = [f32("mean", [0.1, -0.2, 0.3]), f32("std", [0.5, 2.0, 1.5]), f32("scale", [0.8]), f32("offset", [-0.1]),
               const("w1", [6, 3, 3, 3]), const("b1", [6]), const("w2", [4, 6, 3, 3]), const("b2", [4])]
save("keras_channels_last_flatten", [3, 8, 6],
     keras_start + [helper.make_node("Reshape", ["nhwc", "flat"], ["f"]), helper.make_node("MatMul", ["f", "d1"], ["m1"]),
                    helper.make_node("Add", ["m1", "e1"], ["a1"]), helper.make_node("Relu", ["a1"], ["h"]),
                    helper.make_node("MatMul", ["h", "d2"], ["m2"]), helper.make_node("Add", ["m2", "e2"], ["y"])],
     keras_inits + [i64("flat", [-1, 4 * 4 * 3]), const("d1", [48, 10]), const("e1", [10]), const("d2", [10, 5]), const("e2", [5])],
     "ok", channels_last=True)
save("keras_channels_last_reduce", [3, 8, 6],
     keras_start + [helper.make_node("ReduceMean", ["nhwc"], ["g"], axes=[1, 2], keepdims=1), helper.make_node("Flatten", ["g"], ["f"]),
                    helper.make_node("MatMul", ["f", "d"], ["m"]), helper.make_node("Add", ["m", "e"], ["y"])],
     keras_inits + [const("d", [4, 5]), const("e", [5])], "ok", channels_last=True)
# Keras' Rescaling(1/255) in the graph: a model of pixel values 0..255, imported with --input-scale 255
# for shrink's 0..1 inputs.
nodes, inits = head("c", 4)
save("keras_rescaling_0_255", [3, 6, 6],
     [helper.make_node("Mul", ["x", "s"], ["xm"]), helper.make_node("Transpose", ["xm"], ["xt"], perm=[0, 3, 1, 2]),
      helper.make_node("Conv", ["xt", "w"], ["c"], kernel_shape=[3, 3])] + nodes, [f32("s", 1 / 255), const("w", [4, 3, 3, 3])] + inits,
     "ok", channels_last=True, input_scale=255.0)
# A layer reading the channels-last view itself (an N,H,W,C tensor shrink's layers never hold).
save("keras_relu_on_channels_last", [3, 8, 6],
     keras_start + [helper.make_node("Relu", ["nhwc"], ["rr"]), helper.make_node("Flatten", ["rr"], ["f"]),
                    helper.make_node("MatMul", ["f", "d"], ["y"])],
     keras_inits + [const("d", [48, 5])], "error", "reads a channels-last (N,H,W,C) tensor", channels_last=True)

# A squeeze-excite gate of Gemm layers brought back to C,1,1 by one Unsqueeze at axes 2, 3 (and
# pooled by a Squeeze of a C,1,1 image), expanded to the image and multiplied.
save("gate_unsqueeze_expand", [4, 5, 5],
     [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
      helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Squeeze", ["g", "hw_axes"], ["s"]),
      helper.make_node("Gemm", ["s", "f1"], ["h"], transB=1), helper.make_node("Sigmoid", ["h"], ["sg"]),
      helper.make_node("Unsqueeze", ["sg", "hw_axes"], ["u"]), helper.make_node("Shape", ["r"], ["rs"]),
      helper.make_node("Expand", ["u", "rs"], ["e"]), helper.make_node("Mul", ["r", "e"], ["m"]),
      helper.make_node("GlobalAveragePool", ["m"], ["g2"]), helper.make_node("Flatten", ["g2"], ["f"]),
      helper.make_node("Gemm", ["f", "hw", "hb"], ["y"], transB=1)],
     [const("w", [6, 4, 3, 3]), i64("hw_axes", [2, 3]), const("f1", [6, 6]), const("hw", [5, 6]), const("hb", [5])], "ok")
nodes, inits = head("c", 6)
save("expand_read_by_conv", [6, 5, 5],
     [helper.make_node("GlobalAveragePool", ["x"], ["gx"]), helper.make_node("Shape", ["x"], ["xs"]), helper.make_node("Expand", ["gx", "xs"], ["e"]),
      helper.make_node("Conv", ["e", "w"], ["c"], kernel_shape=[1, 1])] + nodes, [const("w", [6, 6, 1, 1])] + inits,
     "error", "reads an Expand's output")
# Refused, never read past their data: a Gemm whose weight does not fit a channels-last flatten,
# Split's num_outputs unlike its outputs, a Constant of two values, a Pad before a normalization.
save("keras_gemm_of_wrong_width", [3, 8, 6],
     keras_start + [helper.make_node("Flatten", ["nhwc"], ["f"]), helper.make_node("Gemm", ["f", "d"], ["y"], transB=1)],
     keras_inits + [const("d", [5, 10])], "error", "B of shape 5x10 for 48 input features", channels_last=True)
nodes, inits = head("s0", 3)
save("split_num_outputs_unlike_outputs", [6, 4, 4], [helper.make_node("Split", ["x"], ["s0", "s1"], axis=1, num_outputs=3)] + nodes, inits,
     "error", "num_outputs 3 but 2 outputs", opset=18)
save("constant_of_two_values", [6],
     [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(np.ones((6, 4), np.float32)), value_float=1.0),
      helper.make_node("MatMul", ["x", "w"], ["y"])], [], "error", "exactly one value attribute", check=False)
nodes, inits = head("c", 4)
save("pad_before_normalization", [3, 6, 6],
     [helper.make_node("Pad", ["x", "pads"], ["p"]), helper.make_node("Sub", ["p", "m"], ["n"]),
      helper.make_node("Conv", ["n", "w"], ["c"], kernel_shape=[3, 3])] + nodes,
     [i64("pads", [0, 0, 1, 1, 0, 0, 1, 1]), f32("m", [0.5]), const("w", [4, 3, 3, 3])] + inits, "error", "read only as the input's normalization")
# What torch 2.11's exporters wrote that the importer first refused (seen on a machine with torch
# 2.11): the legacy exporter's F.pad at opset 18, its pad vector computed in the graph from constants
# (ConstantOfShape, Concat, Reshape to pairs, Slice with step -1, Transpose, Reshape, Cast); the
# dynamo exporter's softplus with torch's threshold, Where(x > 20, x, Softplus(x)). Refused: a
# threshold low enough to change values, a comparison of anything else.
nodes, inits = head("c", 4)
save("torch2_legacy_pad_vector", [3, 6, 6],
     [helper.make_node("ConstantOfShape", ["four"], ["zeros"], value=numpy_helper.from_array(np.zeros(1, np.int64))),
      helper.make_node("Concat", ["lrtb", "zeros"], ["cat"], axis=0), helper.make_node("Reshape", ["cat", "pairs"], ["pp"]),
      helper.make_node("Slice", ["pp", "s", "e", "a", "st"], ["rev"]), helper.make_node("Transpose", ["rev"], ["tr"], perm=[1, 0]),
      helper.make_node("Reshape", ["tr", "flat"], ["pv"]), helper.make_node("Cast", ["pv"], ["pads"], to=TensorProto.INT64),
      helper.make_node("Pad", ["x", "pads", "zero"], ["p"], mode="constant"),
      helper.make_node("Conv", ["p", "w"], ["c"], kernel_shape=[3, 3])] + nodes,
     [i64("four", [4]), i64("lrtb", [1, 2, 0, 1]), i64("pairs", [-1, 2]), i64("s", [-1]), i64("e", [-(2**63 - 1)]), i64("a", [0]), i64("st", [-1]),
      i64("flat", [-1]), f32("zero", 0.0), const("w", [4, 3, 3, 3])] + inits, "ok", opset=17)
for name, threshold, message in [("torch2_softplus_threshold", 20.0, ""),
                                 ("softplus_threshold_too_low", 1.0, "T at least 15")]:
    nodes, inits = head("sw", 4)
    save(name, [3, 6, 6],
         [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), helper.make_node("Softplus", ["c"], ["sp"]),
          helper.make_node("Greater", ["c", "t"], ["gt"]), helper.make_node("Where", ["gt", "c", "sp"], ["sw"])] + nodes,
         [const("w", [4, 3, 3, 3], 3.0), f32("t", threshold)] + inits, "error" if message else "ok", message)
nodes, inits = head("c", 4)
save("greater_of_a_tensor", [3, 6, 6],
     [helper.make_node("Greater", ["x", "t"], ["gt"]), helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3])] + nodes,
     [const("t", [1, 3, 1, 1]), const("w", [4, 3, 3, 3])] + inits, "error", "only a comparison with a scalar")

# External data behind a link that leads out of the model's folder.
save("external_data_link_out", [3, 8, 8], dynamo_style, dynamo_inits, "error", "a link leads out of it", opset=18, external=True)
outside = os.path.join(os.path.dirname(os.path.abspath(out)), "outside.data")
os.replace(os.path.join(out, "external_data_link_out.onnx.data"), outside)
os.symlink(outside, os.path.join(out, "external_data_link_out.onnx.data"))

with open(os.path.join(out, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
