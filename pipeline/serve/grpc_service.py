"""The V2 gRPC service (``inference.GRPCInferenceService``) over the same models and batchers as REST.

Owns: ``V2Servicer`` (ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer)
and ``start_grpc``. Imports: grpc (grpc.aio), numpy, tritonclient.grpc's generated ``service_pb2``
modules (the protocol's messages, as Triton's own clients use them; both in the ``serve`` extra),
pipeline.serve.{model, protocol}. Reads/writes nothing on disk.

Tensors come as ``raw_input_contents`` (what tritonclient sends) or typed ``contents``; outputs go
back as ``raw_output_contents``. Refusals are gRPC status codes with the same one sentence as REST:
INVALID_ARGUMENT (400), NOT_FOUND (404), RESOURCE_EXHAUSTED (413), UNAVAILABLE (503), INTERNAL (500).
The other RPCs of the service (repository, shared memory, trace, ...) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import time
from typing import Optional

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from pipeline.serve.model import VERSION, ServedModel, input_error_status
from pipeline.serve.protocol import InferRequest, ProtocolError, raw_bytes, tensor_from

__all__ = ["V2Servicer", "start_grpc"]

_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
          413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE, 500: grpc.StatusCode.INTERNAL}
_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents", "INT32": "int_contents",
             "INT16": "int_contents", "INT8": "int_contents", "UINT64": "uint64_contents", "UINT32": "uint_contents",
             "UINT16": "uint_contents", "UINT8": "uint_contents", "BOOL": "bool_contents"}


def _param(p) -> object:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def decode_infer(request) -> InferRequest:
    """A ModelInferRequest as an ``InferRequest`` (raw contents in order, else the typed contents)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(400, f"raw_input_contents: expected one per input ({len(request.inputs)}), got {len(raw)}")
    inputs = {}
    for i, spec in enumerate(request.inputs):
        shape = tuple(int(d) for d in spec.shape)
        if any(d < 0 for d in shape):
            raise ProtocolError(400, f"input {spec.name!r}: expected non-negative dimensions, got {list(shape)}")
        if raw:
            inputs[spec.name] = tensor_from(spec.name, spec.datatype, shape, raw=raw[i])
        else:
            field = _CONTENTS.get(spec.datatype)
            data = list(getattr(spec.contents, field)) if field else None
            inputs[spec.name] = tensor_from(spec.name, spec.datatype, shape, data=data)
    params = {k: _param(v) for k, v in request.parameters.items()}
    outputs = [o.name for o in request.outputs] or None
    classification = {o.name: _param(o.parameters["classification"]) for o in request.outputs
                      if "classification" in o.parameters}
    return InferRequest(inputs, request.id or None, params, outputs, classification=classification)


class V2Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The V2 RPCs over ``models`` (name -> ServedModel); ``app`` holds ``ready`` and the metrics."""

    def __init__(self, models: dict[str, ServedModel], app, server_name: str, version: str, extensions: list) -> None:
        self.models = models
        self.app = app
        self.server_name, self.version, self.extensions = server_name, version, extensions

    def _model(self, name: str, version: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise ProtocolError(404, f"unknown model {name!r}; this server has {sorted(self.models)}", "not_found")
        model.check_version(version or None)
        return model

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.app.ready)

    async def ModelReady(self, request, context):
        try:
            self._model(request.name, request.version)
        except ProtocolError:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=self.app.ready)

    async def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name=self.server_name, version=self.version,
                                                  extensions=self.extensions)

    async def ModelMetadata(self, request, context):
        try:
            model = self._model(request.name, request.version)
        except ProtocolError as e:
            await context.abort(_CODES[e.status], str(e))
        meta = model.metadata()
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

    async def ModelInfer(self, request, context):
        t0 = time.perf_counter()
        model: Optional[ServedModel] = None
        reason = None
        try:
            model = self._model(request.model_name, request.model_version)
            if not self.app.ready:
                raise ProtocolError(503, "the server is shutting down", "shutting_down")
            outputs = await model.infer(decode_infer(request))
            response = service_pb2.ModelInferResponse(model_name=model.name, model_version=VERSION, id=request.id)
            for name, arr in outputs.items():
                out = response.outputs.add()
                out.name, out.datatype = name, "BYTES" if arr.dtype == object else "FP32"
                out.shape.extend(arr.shape)
                response.raw_output_contents.append(raw_bytes(arr))
            return response
        except Exception as e:  # noqa: BLE001 - every failure is answered with one sentence
            status, reason, message = input_error_status(e)
            code = _CODES.get(status, grpc.StatusCode.INTERNAL)
        finally:
            metrics = self.app.metrics
            if metrics is not None:
                metrics.answered(model.name if model else "", "grpc", time.perf_counter() - t0, reason)
        await context.abort(code, message)


async def start_grpc(servicer: V2Servicer, host: str, port: int, max_message_bytes: int) -> "grpc.aio.Server":
    """A started grpc.aio server on host:port (on the running event loop)."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes),
                                      ("grpc.so_reuseport", 0)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    await server.start()
    return server
