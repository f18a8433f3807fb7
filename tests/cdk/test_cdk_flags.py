"""cdk.json carries the CDK's recommended feature flags, except the few that would change this stack's resources."""

from __future__ import annotations

from cdk_fixtures import REPO_ROOT, cdk_json_context

#: Recommended by `cdk flags` (aws-cdk-lib 2.275) but left unset: each changes the template (docs/deploy.md).
LEFT_OUT = {
    "@aws-cdk/aws-ec2:restrictDefaultSecurityGroup",
    "@aws-cdk/aws-iam:minimizePolicies",
    "@aws-cdk/aws-lambda:useCdkManagedLogGroup",
    "@aws-cdk/core:defaultCrossStackReferences",
    "@aws-cdk/core:target-partitions",
}


def test_recommended_flags_are_set_and_the_left_out_ones_documented():
    context = cdk_json_context()
    flags = {k: v for k, v in context.items() if k.startswith("@aws-cdk")}
    # What `cdk flags --safe` wrote (79 of the 84 unconfigured recommended flags, 20 more at their recommended
    # value; no template change, checked on the default and a production-like synth), plus the one cdk.json had.
    assert len(flags) >= 100
    assert flags["@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"] is True
    assert flags["@aws-cdk/aws-s3:publicAccessBlockedByDefault"] is True
    assert flags["@aws-cdk/customresources:installLatestAwsSdkDefault"] is False
    assert not LEFT_OUT & set(flags)
    deploy_doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for flag in LEFT_OUT:
        assert f"`{flag}`" in deploy_doc, f"{flag} is left out of cdk.json without a reason in docs/deploy.md"
