"""Stage 5, training and evaluation: trainers (linear probe, fine-tuning), metrics on the real test set,
and the train/eval job that runs as a subprocess or a Kubernetes pod (Dagster Pipes)."""
