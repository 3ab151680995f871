"""The effectful shell: data, trainer (CPU/CUDA, AMP), and the run loop."""
