FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MALLOC_ARENA_MAX=2
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY processor ./processor
RUN pip install --constraint constraints.txt .
USER nobody
ENTRYPOINT ["processor"]
CMD ["worker"]
