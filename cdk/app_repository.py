"""The ECR repository for the API/UI image (built and pushed by CD, tagged with the git sha)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from constructs import Construct

#: How many sha-tagged images to keep for rollbacks.
KEEP_IMAGES = 30


class AppRepository(Construct):
    """Scan on push, immutable tags, lifecycle rules for untagged layers and old images."""

    def __init__(self, scope: Construct, construct_id: str, *, retain: bool) -> None:
        super().__init__(scope, construct_id)
        self.repository = ecr.Repository(
            self,
            "Repository",
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    rule_priority=1,
                    description="drop untagged images after a day",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_age=Duration.days(1),
                ),
                ecr.LifecycleRule(
                    rule_priority=2,
                    description=f"keep the newest {KEEP_IMAGES} images",
                    tag_status=ecr.TagStatus.ANY,
                    max_image_count=KEEP_IMAGES,
                ),
            ],
            removal_policy=RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY,
            empty_on_delete=not retain,
        )

    def image_uri(self, tag: str) -> str:
        """The URI the pods pull (a token until deploy)."""
        return self.repository.repository_uri_for_tag(tag)
