"""Retraining without massive activations: the GPT, the Bigram-Backcopy task, training, the retrofit."""
