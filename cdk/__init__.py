"""The Flywheel AWS CDK app: `cdk deploy` from the repository root (see docs/deploy.md)."""
