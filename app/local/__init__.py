"""`flywheel up`: the whole loop on one machine (embedded S3 + SQS, worker, API replicas, UI)."""
