"""What massive activations cost at inference: precision headroom, quantization, windowed attention."""
