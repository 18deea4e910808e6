"""gru-serve: exported models behind the Open Inference Protocol (V2), over REST and gRPC.

Owns: the network service (the ``serve`` extra: uvicorn, grpcio, tritonclient's protocol messages,
prometheus_client). Imports: the TF-free runtime and the shared modules only; never TensorFlow,
Keras or onnx (make lint's contracts).

    protocol      V2 tensors in and out of REST bodies (JSON and binary data); ProtocolError
    batcher       a bounded queue and one worker thread: concurrent requests, one native call
    sequences     per-id GRU state between requests, stepped together, evicted when idle
    model         one served model: metadata, request checks, the two batchers
    metrics       Prometheus metrics (/metrics)
    http_app      the REST endpoints as an ASGI app
    grpc_service  the gRPC service
    server        REST + gRPC on one event loop; SIGTERM drains
    ray_engine    the same app as a Ray Serve deployment
    cli           gru-serve
"""
