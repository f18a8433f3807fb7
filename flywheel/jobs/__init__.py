"""The units of work the adapters run: one retrain, one judge pass, the arrival of feedback files."""
