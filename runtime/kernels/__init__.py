"""Triton kernels for the GPU decode path. Imported only when a CUDA tensor needs them (`runtime.ops`), so the CPU
path, and machines without Triton, never import triton."""
