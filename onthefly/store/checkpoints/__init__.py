"""Checkpoints: training state in safetensors files."""
