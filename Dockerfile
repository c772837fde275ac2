# The worker image: the runtime package only. Model building (processor/ml) and local tooling
# (processor/dev) stay out, and so does the `train` extra; `processor worker` never imports them.
# Two targets: the default (last) stage is the worker; `--target model-server` adds the Triton binary
# for `processor serve-model` and `processor export-triton` (docs/operations/model-server.md).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY processor ./processor
RUN rm -rf processor/ml processor/dev && pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MALLOC_ARENA_MAX=2
COPY constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /wheels
RUN pip install --constraint /tmp/constraints.txt /wheels/*.whl && rm -rf /wheels
# The remote inference client (PROCESSOR_INFERENCE_URL): tritonclient with its http extra's packages named
# (no extras in this image), grpcio and protobuf for grpc:// and Triton's model-config schema (TensorFlow
# brings those two in the dev environment; tritonclient's own grpc extra would pin an older grpcio).
RUN pip install --constraint /tmp/constraints.txt tritonclient aiohttp geventhttpclient python-rapidjson grpcio protobuf
USER nobody
ENTRYPOINT ["processor"]
CMD ["worker"]

# The model server: the wheel's tritonserver (Python backend, stubs per Python version) runs the model
# on ONNX Runtime; --no-deps as in `make install` (the wheel pins numpy<2 for a Python API not used here).
FROM runtime AS model-server
USER root
RUN pip install --no-deps --constraint /tmp/constraints.txt nvidia-pytriton
USER nobody
EXPOSE 8000 8001 8002
CMD ["serve-model"]

FROM runtime AS worker
