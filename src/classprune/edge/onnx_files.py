"""The ONNX files of an export: fp32 (dense and with sparse initializers), fp16 and int8, and running them.

fp16 is the fp32 graph with fp16 tensors and fp32 inputs/outputs (onnxruntime's float16 converter), the
final Softmax in fp32; on a CPU without fp16 kernels onnxruntime casts around those nodes. int8 is static post-training quantization (QDQ,
per-channel symmetric int8 weights, activations calibrated on training images of both classes): symmetric
weights keep every pruned zero exactly zero, which :func:`quantize_int8` checks. Each precision also comes
as a ``*_sparse`` file that stores every mostly-zero weight as an ONNX sparse initializer (values + int64
positions): onnxruntime densifies it when the session loads, so it saves bytes on disk and in transfer, not
compute, and not every runtime accepts it (the dense-stored file is the portable one).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ExportError, first_line

FILES = {"fp32": "model.onnx", "fp32_sparse": "model_sparse.onnx", "fp16": "model_fp16.onnx",
         "fp16_sparse": "model_fp16_sparse.onnx", "int8": "model_int8.onnx", "int8_sparse": "model_int8_sparse.onnx"}
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


class _Scored(torch.nn.Module):
    """The network plus the positive-class probability, so a runtime needs no post-processing."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(image)
        return logits, torch.softmax(logits, dim=1)[:, 1]


def export_onnx(model: torch.nn.Module, image_size: int, path: str | Path, metadata: Mapping[str, Any]) -> None:
    """torch.onnx (dynamo) export with a dynamic batch; ``metadata`` goes into metadata_props as strings."""
    import warnings

    wrapped = _Scored(model).eval()
    example = torch.zeros(1, 3, image_size, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapped, (example,), None, input_names=["image"],
                                    output_names=["logits", "score"], dynamo=True, verbose=False,
                                    dynamic_shapes={"image": {0: torch.export.Dim("batch")}})
    for node in program.model.graph.all_nodes():  # exporter debug info: stack traces with this machine's paths
        node.metadata_props.clear()                  # would make the file differ between checkouts
    program.model.metadata_props.update(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    program.save(str(path))


def session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session; an unloadable file is a one-line CheckpointError naming it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        raise CheckpointError(f"cannot load ONNX model {path}: {first_line(exc)[:300]}") from None
    names = {o.name for o in sess.get_outputs()}
    if [i.name for i in sess.get_inputs()] != ["image"] or not {"logits", "score"} <= names:
        raise CheckpointError(f"ONNX model {path} is not a classprune export (needs input 'image', "
                              "outputs 'logits' and 'score')")
    return sess


def run(sess, batches: Iterable[np.ndarray], path: str | Path = "<onnx>") -> tuple[np.ndarray, np.ndarray]:
    """Log-odds (float64, for AUC) and the ``score`` output (the device's decision value) over ``batches``."""
    logodds, scores = [], []
    for x in batches:
        try:
            logits, score = sess.run(["logits", "score"], {"image": np.ascontiguousarray(x, dtype=np.float32)})
        except Exception as exc:
            raise CheckpointError(f"ONNX model {path} cannot take input of shape {tuple(x.shape)}: "
                                  f"{first_line(exc)[:200]}") from None
        logits = logits.astype(np.float64)
        logodds.append(logits[:, 1] - logits[:, 0])
        scores.append(score.astype(np.float32))
    return np.concatenate(logodds), np.concatenate(scores)


def to_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and activations; Softmax stays fp32 so that the score of a confident network does not
    round to 0 or 1 for many images at once (fp16 has 11 bits: ties would move the val-chosen threshold)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                     op_block_list=[*DEFAULT_OP_BLOCK_LIST, "Softmax"])
    onnx.save(model, str(dst))


def to_sparse_initializers(src: Path, dst: Path) -> int:
    """Weights more than half zero become sparse initializers; returns how many tensors did."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    dense, sparse = [], []
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        nz = np.flatnonzero(a)
        if a.ndim >= 2 and 2 * nz.size < a.size:
            values = numpy_helper.from_array(a.reshape(-1)[nz], init.name)
            positions = numpy_helper.from_array(nz.astype(np.int64), init.name + "_positions")
            sparse.append(helper.make_sparse_tensor(values, positions, list(a.shape)))
        else:
            dense.append(init)
    del model.graph.initializer[:]
    model.graph.initializer.extend(dense)
    model.graph.sparse_initializer.extend(sparse)
    onnx.save(model, str(dst))
    return len(sparse)


def _try_session(path: Path, probe: np.ndarray) -> None:
    run(session(path), [probe], path)


def quantize_int8(src: Path, dst: Path, calibration: list[np.ndarray],
                  try_session: Callable[[Path, np.ndarray], None] = _try_session, reduce_range: bool = False) -> list[str]:
    """Static QDQ int8 of Conv/Gemm/MatMul; returns the nodes left in fp32.

    A node whose quantized form onnxruntime cannot load or run is excluded and quantization redone (one node
    at a time, named in the error); then every weight zero of ``src`` must still be zero. ``reduce_range``:
    7-bit weights, so that onnxruntime's AVX2 kernels without VNNI (whose u8 x s8 pair sums saturate at 16
    bits) compute exactly what VNNI kernels do: the file scores the same on either CPU.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": x} for x in calibration])

        def get_next(self):
            return next(self.batches, None)

    pre = dst.with_name(dst.stem + ".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    nodes = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in QUANTIZED_OPS]
    excluded: list[str] = []
    try:
        while True:
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=excluded,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
            try:
                try_session(dst, calibration[0])
                break
            except CheckpointError as exc:
                culprit = next((n for n in nodes if n not in excluded and n in str(exc)), None)
                if culprit is None:
                    raise ExportError(f"int8 model {dst.name} does not run in onnxruntime and no single "
                                      f"node is named: {exc}") from None
                excluded.append(culprit)
    finally:
        pre.unlink(missing_ok=True)
    check_zeros(src, dst)
    return excluded


def check_zeros(src: Path, quantized: Path) -> None:
    """Every zero weight of ``src`` is zero in ``quantized`` (its int8 tensor, zero point 0)."""
    import onnx
    from onnx import numpy_helper

    ref = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(src)).graph.initializer}
    q = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(quantized)).graph.initializer}
    for name, a in ref.items():
        if a.ndim < 2 or f"{name}_quantized" not in q:
            continue
        w, zp = q[f"{name}_quantized"], q.get(f"{name}_zero_point")
        if zp is not None and np.any(zp != 0):
            raise ExportError(f"int8 weights of {name} have a non-zero zero point: pruned zeros would move")
        if np.any(w[a == 0] != 0):
            raise ExportError(f"int8 quantization of {name} turned {int(np.sum(w[a == 0] != 0))} pruned zeros "
                              "into non-zero weights")


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_features() -> dict[str, Any]:
    """The CPU that evaluated a file: int8 kernels differ by these flags, so a shipped int8 decision is only
    as portable as the files' arithmetic (see ``reduce_range``)."""
    import platform

    info = {"machine": platform.machine(), "model": None, "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the model is all we know
        return info | {"model": platform.processor() or None}
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    info.update(model=fields.get("model name"), flags=[f for f in CPU_FLAGS if f in flags])
    info["vnni"] = bool({"avx512_vnni", "avx_vnni"} & flags)
    return info


def cpu_text(cpu: Mapping[str, Any]) -> str:
    """One line for a table: the CPU's model and whether it has VNNI int8 kernels."""
    return f"{cpu.get('model') or cpu.get('machine')} ({'VNNI' if cpu.get('vnni') else 'no VNNI'})"
