"""The Open Inference Protocol (KServe V2) as data: tensors in and out of REST bodies, without a server.

Owns: ``ProtocolError`` (an HTTP status and one sentence), the V2 datatype table, the REST codec
(JSON tensors and Triton's binary tensor data extension: the ``Inference-Header-Content-Length``
header, ``binary_data_size`` on inputs, ``binary_data`` / ``binary_data_output`` on outputs), Triton's
classification extension (``classify``) and ``InferRequest`` / ``tensor_from`` / ``raw_bytes`` shared
with the gRPC codec. Imports: numpy, orjson.
Reads and writes nothing: bytes in, bytes out.

The REST body of an infer request is JSON, optionally followed by the raw bytes of the inputs that
say ``"parameters": {"binary_data_size": n}``; the header ``Inference-Header-Content-Length`` gives
the JSON's length. A response carries an output in binary when the request asked for it (the
output's ``binary_data`` parameter, or ``binary_data_output`` on the request), which is what a
default ``tritonclient.http`` call does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import orjson  # JSON bodies (the serve extra): see docs/serving.md for what it saves

__all__ = ["ProtocolError", "InferRequest", "DTYPES", "tensor_from", "parse_rest_infer", "encode_rest_infer", "classify",
           "raw_bytes"]

# V2 datatype -> numpy dtype (little-endian, as the binary extension sends them). BYTES is not a tensor
# this server takes: its models read numbers only.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
SEQUENCE_PARAMS = ("sequence_id", "sequence_start", "sequence_end")


class ProtocolError(Exception):
    """A request the server refuses: ``status`` (HTTP: 400, 404, 413, 503, 500) and one sentence."""

    def __init__(self, status: int, message: str, reason: str = "bad_request") -> None:
        super().__init__(" ".join(str(message).split()))
        self.status = status
        self.reason = reason  # the metrics label: bad_request, not_found, queue_full, ...


@dataclass
class InferRequest:
    """One decoded infer request, whatever protocol it came in on."""

    inputs: dict[str, np.ndarray]                    # name -> tensor, shaped as the request said
    id: Optional[str] = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: Optional[list[str]] = None              # requested output names (None: all)
    binary_outputs: set = field(default_factory=set)  # REST: outputs to return as raw bytes
    classification: dict = field(default_factory=dict)  # output name -> top-n classes asked for (extension)

    @property
    def sequence(self) -> Optional[tuple[Any, bool, bool]]:
        """(sequence_id, start, end) when the request belongs to a sequence (a non-zero, non-empty id)."""
        sid = self.parameters.get("sequence_id")
        if sid is None or sid == 0 or sid == "":
            return None
        if not isinstance(sid, (int, str)) or isinstance(sid, bool):
            raise ProtocolError(400, f"parameter sequence_id: expected an unsigned integer or a string, got {sid!r}")
        return sid, bool(self.parameters.get("sequence_start", False)), bool(self.parameters.get("sequence_end", False))


def _shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(400, f"input {name!r}: expected 'shape' as a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def tensor_from(name: str, datatype: Any, shape: tuple[int, ...], raw: Optional[bytes] = None,
                data: Any = None) -> np.ndarray:
    """The numpy array of a V2 tensor given as raw little-endian bytes or as a (flat or nested) list."""
    dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise ProtocolError(400, f"input {name!r}: expected a numeric datatype ({', '.join(DTYPES)}), got {datatype!r}")
    count = int(np.prod(shape, dtype=np.int64))
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise ProtocolError(400, f"input {name!r}: shape {list(shape)} of {datatype} needs "
                                     f"{count * dtype.itemsize} bytes, got {len(raw)}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if data is None:
        raise ProtocolError(400, f"input {name!r}: expected 'data' or binary data, got neither")
    try:
        arr = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(400, f"input {name!r}: expected {datatype} values in 'data', got values that are not "
                                 f"{datatype}") from None
    if arr.size != count:
        raise ProtocolError(400, f"input {name!r}: shape {list(shape)} needs {count} values, got {arr.size}")
    return arr.reshape(shape)


def _json_object(text: bytes) -> dict:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise ProtocolError(400, f"request body: expected a JSON object, got invalid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(400, f"request body: expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_rest_infer(body: bytes, header_length: Optional[str]) -> InferRequest:
    """Decode a REST infer body (JSON, plus binary tensor data when ``header_length`` is given)."""
    if header_length is None:
        head, rest = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise ProtocolError(400, f"Inference-Header-Content-Length: expected an integer from 0 to the body's "
                                     f"{len(body)} bytes, got {header_length!r}")
        head, rest = bytes(memoryview(body)[:n]), memoryview(body)[n:]
    obj = _json_object(head)
    params = obj.get("parameters") or {}
    inputs_spec = obj.get("inputs")
    if not isinstance(params, dict):
        raise ProtocolError(400, f"parameters: expected a JSON object, got {params!r}")
    if not isinstance(inputs_spec, list) or not inputs_spec:
        raise ProtocolError(400, "inputs: expected a non-empty list of tensors, got "
                                 f"{'none' if inputs_spec is None else repr(inputs_spec)[:80]}")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for spec in inputs_spec:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError(400, f"inputs: expected objects with a 'name', got {repr(spec)[:80]}")
        name = spec["name"]
        shape = _shape(name, spec.get("shape"))
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise ProtocolError(400, f"input {name!r}: binary_data_size {size!r} runs past the "
                                         f"{len(rest)} bytes of binary data")
            inputs[name] = tensor_from(name, spec.get("datatype"), shape, raw=bytes(rest[offset:offset + size]))
            offset += size
        else:
            inputs[name] = tensor_from(name, spec.get("datatype"), shape, data=spec.get("data"))
    if offset != len(rest):
        raise ProtocolError(400, f"request body: {len(rest) - offset} bytes of binary data that no input claims")
    outputs = None
    binary = set()
    classification: dict = {}
    all_binary = bool(params.get("binary_data_output", False))
    if obj.get("outputs") is not None:
        if not isinstance(obj["outputs"], list):
            raise ProtocolError(400, f"outputs: expected a list, got {obj['outputs']!r}")
        outputs = []
        for spec in obj["outputs"]:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise ProtocolError(400, f"outputs: expected objects with a 'name', got {repr(spec)[:80]}")
            outputs.append(spec["name"])
            p = spec.get("parameters") or {}
            if p.get("classification"):
                classification[spec["name"]] = p["classification"]
            if p.get("binary_data", all_binary):
                binary.add(spec["name"])
    rid = obj.get("id")
    return InferRequest(inputs, None if rid is None else str(rid), params, outputs,
                        binary if outputs is not None else ({"*"} if all_binary else set()), classification)


def raw_bytes(arr: np.ndarray) -> bytes:
    """A tensor's raw contents: little-endian float32, or BYTES as a 4-byte length before each element."""
    if arr.dtype != object:
        return np.ascontiguousarray(arr, dtype="<f4").tobytes()
    return b"".join(len(b).to_bytes(4, "little") + b for b in arr.reshape(-1))


def classify(proba: np.ndarray, n: Any, class_names: list, binary: bool, name: str) -> np.ndarray:
    """Triton's classification extension: (rows, n) BYTES ``"<probability>:<index>:<class name>"``, best first.

    A binary model's (rows,) p(class 1) is read as the two classes' probabilities (1 - p, p)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ProtocolError(400, f"output {name!r}: classification expects a positive class count, got {n!r}")
    P = np.stack([1 - proba, proba], axis=1) if binary else proba  # (rows, k)
    n = min(n, P.shape[1])
    order = np.argsort(-P, axis=1, kind="stable")[:, :n]  # (rows, n)
    out = np.empty(order.shape, dtype=object)
    for r, row in enumerate(order):
        for j, c in enumerate(row):
            out[r, j] = f"{float(P[r, c]):.9g}:{int(c)}:{class_names[c]}".encode()
    return out


def encode_rest_infer(model: str, version: str, req: InferRequest,
                      outputs: dict[str, np.ndarray]) -> tuple[bytes, Optional[int]]:
    """(body, json_length) of a response: json_length is None when every output is JSON."""
    specs, blobs = [], []
    for name, arr in outputs.items():
        strings = arr.dtype == object  # a classification: BYTES
        spec: dict[str, Any] = {"name": name, "datatype": "BYTES" if strings else "FP32", "shape": list(arr.shape)}
        if name in req.binary_outputs or "*" in req.binary_outputs:
            blob = raw_bytes(arr)
            spec["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif strings:
            spec["data"] = [b.decode() for b in arr.reshape(-1)]
        else:
            spec["data"] = np.ascontiguousarray(arr, np.float32).reshape(-1)  # each the shortest text of its float32
        specs.append(spec)
    resp: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": specs}
    if req.id is not None:
        resp["id"] = req.id
    head = orjson.dumps(resp, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)
