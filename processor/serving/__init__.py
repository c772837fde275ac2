"""The model as a service: ``processor serve-model`` (Triton from the nvidia-pytriton wheel, ONNX Runtime
in its Python backend) and ``processor export-triton`` (a repository for NVIDIA's own server image)."""
