"""Fused warp kernels (Triton for CUDA)."""
