"""Measuring: capture, detect, perplexity, attention sinks and bias, origins (super weights), regrowth."""
