"""Fused ops (Triton on GPUs, chunked torch elsewhere); torch and triton imports only."""
