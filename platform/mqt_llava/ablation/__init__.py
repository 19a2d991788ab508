"""Ablations: the Ray Tune grid over MQT-LLaVA training variants, its MLflow runs and its report."""
