"""The model registry in S3: numbered signed versions and their manifests, model registrations, the production
alias and its history, the operator's alias moves.
"""
