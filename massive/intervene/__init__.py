"""Intervening: the interventions, massive.compare (conditions against a baseline), ablation readings, zero-shot."""
