"""Training data: CSV scanning and validation, create-only uploads, the batch store and quarantine, the catalog of
validated copies, ingest, sample data.
"""
