"""The optional MLflow mirror: runs per retrain, the registry and its aliases mirrored (docs/mlflow.md)."""
