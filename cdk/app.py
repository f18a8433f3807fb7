"""`cdk` entry point (cdk.json: `python -m cdk.app`): one FlywheelStack, checked by cdk-nag's AwsSolutions pack."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import App, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from cdk.access_settings import AccessSettings
from cdk.mlflow_settings import MlflowSettings
from cdk.nag import acknowledge_findings
from cdk.settings import DeploySettings
from cdk.stack import FlywheelStack

REPO_ROOT = Path(__file__).resolve().parent.parent


def build_app(app: App | None = None) -> tuple[App, FlywheelStack]:
    """Build the app from context; tests call this with an App of their own."""
    app = app or App()
    settings = DeploySettings.from_context(app.node)
    # Environment-agnostic on purpose: synth needs no account, no lookups, no credentials; `cdk deploy` uses
    # the account and region of the caller's credentials.
    stack = FlywheelStack(
        app,
        f"Flywheel-{settings.env_name}",
        settings=settings,
        repo_root=REPO_ROOT,
        access=AccessSettings.from_context(app.node),
        mlflow=MlflowSettings.from_context(app.node),
        description="Flywheel: S3 drop -> trainer Lambda -> model registry -> EKS serving (docs/deploy.md)",
    )
    Tags.of(stack).add("project", "flywheel")
    Tags.of(stack).add("environment", settings.env_name)
    acknowledge_findings(stack)
    add_nag_checks(app)
    return app, stack


def add_nag_checks(app: App) -> None:
    """cdk-nag's AwsSolutions pack as a policy-validation plugin: an unacknowledged finding fails the synth."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True))


def main() -> None:
    """Synthesize into the directory the CDK CLI asked for."""
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
