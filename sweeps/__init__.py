"""Ray Tune and Optuna over the Safety Tax, with the Pareto front in MLflow; the safetytax CLI."""
