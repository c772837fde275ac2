# The worker image: the runtime package only. Model building (processor/ml) and local tooling
# (processor/dev) stay out, and so does the `train` extra; `processor worker` never imports them.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY processor ./processor
RUN rm -rf processor/ml processor/dev && pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MALLOC_ARENA_MAX=2
COPY constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /wheels
RUN pip install --constraint /tmp/constraints.txt /wheels/*.whl && rm -rf /wheels
USER nobody
ENTRYPOINT ["processor"]
CMD ["worker"]
