"""Figures: static (matplotlib) and interactive (Plotly)."""
