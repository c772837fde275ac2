"""Local tooling, never imported by the worker: the embedded stack (Tansu broker, Postgres, Redis),
a local image CDN, the demo, and the one worker-process harness the demo, tests and benchmarks share."""
