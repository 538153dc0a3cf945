"""The core: errors, architectures (arch), hook points (hooks), token sequences, model loading, result files."""
