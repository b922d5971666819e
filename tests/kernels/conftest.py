"""Run the Triton kernels under the Triton interpreter when no CUDA device is present."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
