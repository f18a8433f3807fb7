"""The trainer Lambda and every IAM grant of the stack (trainer, API pods, UI pods)."""

from __future__ import annotations

import json

from aws_cdk.assertions import Template
from cdk_fixtures import (
    InProcessSynth,
    actions,
    app_config,
    only,
    role_statements,
    s3_grants,
    trainer_environment,
)

from cdk.settings import DeploySettings

DEFAULTS = DeploySettings()

# --- trainer Lambda --------------------------------------------------------------------------------------


def test_trainer_is_an_image_function_with_15_minute_timeout(synth: InProcessSynth):
    _, function = only(synth.resources("AWS::Lambda::Function"), "TrainerFunction")
    props = function["Properties"]
    assert props["PackageType"] == "Image"
    assert "Handler" not in props and "Runtime" not in props  # the image's CMD names the handler
    assert props["Timeout"] == 900
    assert props["MemorySize"] == DEFAULTS.trainer_memory_mib
    assert props["EphemeralStorage"] == {"Size": DEFAULTS.trainer_ephemeral_storage_mib}
    assert props["Architectures"] == ["x86_64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert "ReservedConcurrentExecutions" not in props  # opt-in: new accounts have too little concurrency


def test_trainer_environment(synth: InProcessSynth):
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    queue_id, _ = only(synth.resources("AWS::Batch::JobQueue"), "TrainerJobQueue")
    definition_id, _ = only(synth.resources("AWS::Batch::JobDefinition"), "TrainerJobDefinition")
    upload_queue_id, _ = only(synth.resources("AWS::SQS::Queue"), "UploadsQueue")
    key_id, _ = only(synth.resources("AWS::KMS::Key"), "SigningKey")
    _, function = only(synth.resources("AWS::Lambda::Function"), "TrainerFunction")
    assert function["Properties"]["Environment"]["Variables"] == {
        "FLYWHEEL_BUCKET": {"Ref": bucket_id},
        "FLYWHEEL_MODEL_NAME": "savings",
        "FLYWHEEL_SCHEMA": "savings",
        "FLYWHEEL_SIGNING_KMS_KEY_ID": {"Fn::GetAtt": [key_id, "Arn"]},  # signs each manifest (test_cdk_signing)
        "FLYWHEEL_ROLLOUT_MODE": "direct",  # rolloutMode / rolloutShare (test_cdk_rollout_settings)
        "FLYWHEEL_ROLLOUT_SHARE": "0.1",
        "FLYWHEEL_LOCK_TTL_SECONDS": "1200",
        # The hand-off to the Batch job (tests/cdk/test_cdk_trainer_job.py) and the lock-contention re-queue.
        "FLYWHEEL_OFFLOAD": "batch",
        "FLYWHEEL_OFFLOAD_JOB_QUEUE": {"Fn::GetAtt": [queue_id, "JobQueueArn"]},
        "FLYWHEEL_OFFLOAD_JOB_DEFINITION": {"Ref": definition_id},
        "FLYWHEEL_QUEUE_URL": {"Ref": upload_queue_id},
        "FLYWHEEL_OFFLOAD_LOCK_SECONDS": str(240 * 60 + 1800),
        "POWERTOOLS_SERVICE_NAME": "flywheel-trainer",
        "POWERTOOLS_METRICS_NAMESPACE": "Flywheel",
        "POWERTOOLS_LOG_LEVEL": "DEBUG",  # envName=dev; prod logs at INFO (test_cdk_variant)
    }


def test_pods_get_the_trainers_bucket_model_name_and_schema(synth: InProcessSynth):
    bucket_id, _ = only(synth.resources("AWS::S3::Bucket"), "DataBucket")
    config, trainer = app_config(synth), trainer_environment(synth)
    shared = ("FLYWHEEL_BUCKET", "FLYWHEEL_MODEL_NAME", "FLYWHEEL_SCHEMA")
    assert {k: config[k] for k in shared} == {k: trainer[k] for k in shared}
    assert config["FLYWHEEL_BUCKET"] == {"Ref": bucket_id}
    assert (config["FLYWHEEL_MODEL_NAME"], config["FLYWHEEL_SCHEMA"]) == (DEFAULTS.model_name, DEFAULTS.schema)
    assert config["AWS_REGION"] == {"Ref": "AWS::Region"}
    assert config["FLYWHEEL_SERVE_MODELS"] == ""  # serveModels unset: every registered model
    assert not any("PLACEHOLDER" in json.dumps(v) for v in config.values())


def test_event_source_debounces_and_reports_partial_failures(synth: InProcessSynth, template: Template):
    queue_id, _ = only(synth.resources("AWS::SQS::Queue"), "UploadsQueue")
    function_id, _ = only(synth.resources("AWS::Lambda::Function"), "TrainerFunction")
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [queue_id, "Arn"]},
            "FunctionName": {"Ref": function_id},
            "BatchSize": DEFAULTS.trainer_batch_size,
            "MaximumBatchingWindowInSeconds": DEFAULTS.trainer_batch_window_seconds,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": {"MaximumConcurrency": DEFAULTS.trainer_max_concurrency},
        },
    )


def test_trainer_image_is_a_deploy_time_asset_of_the_trainer_dockerfile(synth: InProcessSynth):
    assets = json.loads((synth.outdir / f"{synth.stack.stack_name}.assets.json").read_text())
    images = list(assets["dockerImages"].values())
    assert len(images) == 1
    source = images[0]["source"]
    assert source["dockerFile"] == "lambdas/trainer/Dockerfile"
    assert source["platform"] == "linux/amd64"
    # `cdk deploy` builds from this staged copy of the repository: it must hold the Dockerfile and everything
    # the Dockerfile copies, and none of the heavy local directories.
    context = synth.outdir / source["directory"]
    dockerfile = context / source["dockerFile"]
    assert dockerfile.is_file()
    for copied in copy_sources(dockerfile.read_text()):
        assert list(context.glob(copied)), f"the Dockerfile copies {copied}, missing from the staged context"
    for heavy in (".venv", ".git", ".tools", "cdk.out", "tests", "node_modules", "cdk", "k8s"):
        assert not (context / heavy).exists(), f"{heavy} leaked into the image build context"


def copy_sources(dockerfile: str) -> list[str]:
    """Sources of the Dockerfile's COPY instructions that read the build context (not another stage)."""
    sources = []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        sources += [a.rstrip("/") for a in args[:-1]]
    return sources


def test_trainer_iam_is_scoped_to_prefixes(synth: InProcessSynth):
    statements = role_statements(synth, "TrainerRole")
    assert s3_grants(statements) == {
        ("s3:GetObject", "BUCKET/data/*", ""),
        ("s3:GetObjectVersion", "BUCKET/data/*", ""),
        ("s3:GetObjectTagging", "BUCKET/data/*", ""),
        ("s3:DeleteObject", "BUCKET/data/*", ""),
        ("s3:PutObject", "BUCKET/quarantine/*", ""),
        ("s3:PutObjectTagging", "BUCKET/quarantine/*", ""),
        ("s3:AbortMultipartUpload", "BUCKET/quarantine/*", ""),
        ("s3:GetObject", "BUCKET/validated/*", ""),
        ("s3:PutObject", "BUCKET/validated/*", ""),
        ("s3:AbortMultipartUpload", "BUCKET/validated/*", ""),
        ("s3:GetObject", "BUCKET/models/*", ""),
        ("s3:PutObject", "BUCKET/models/*", ""),
        ("s3:DeleteObject", "BUCKET/models/*", ""),
        ("s3:AbortMultipartUpload", "BUCKET/models/*", ""),
        ("s3:GetObject", "BUCKET/captures/*", ""),  # read-only (tests/cdk/test_cdk_captures.py)
        ("s3:GetObject", "BUCKET/feedback/*", ""),
        ("s3:ListBucket", "BUCKET", "data/*,models/*,captures/*,feedback/*"),
        # feedback files processed on arrival (tests/cdk/test_cdk_feedback_arrival.py): quarantine one, write its batch
        ("s3:GetObjectVersion", "BUCKET/feedback/*", ""),
        ("s3:DeleteObject", "BUCKET/feedback/*", ""),
        ("s3:PutObject", "BUCKET/data/*/feedback/*", ""),
    }
    # The only Resource "*" is X-Ray's, which has no resource-level permissions (acknowledged in cdk/nag.py).
    star = [s for s in statements if s["Resource"] == "*"]
    assert star == [
        {"Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Effect": "Allow", "Resource": "*"}
    ]


def test_trainer_role_has_no_managed_policies_and_writes_only_its_log_group(synth: InProcessSynth):
    _, role = only(synth.resources("AWS::IAM::Role"), "TrainerRole")
    assert "ManagedPolicyArns" not in role["Properties"]
    log_group_id, _ = only(synth.resources("AWS::Logs::LogGroup"), "TrainerLogs")
    logs = [s for s in role_statements(synth, "TrainerRole") if str(s["Action"]).count("logs:")]
    assert logs == [
        {
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [log_group_id, "Arn"]},
        }
    ]


def test_api_pods_read_models_and_write_only_their_rollout_statistics(synth: InProcessSynth):
    statements = role_statements(synth, "ServingAppPodRole")
    assert s3_grants(statements) == {
        ("s3:GetObject", "BUCKET/models/*", ""),
        ("s3:ListBucket", "BUCKET", "models/*"),
        ("s3:PutObject", "BUCKET/models/*/rollouts/*/stats/*", ""),  # flywheel/release/rollout_stats.py
        ("s3:PutObject", "BUCKET/captures/*", ""),  # flywheel/serving/capture.py
    }
    assert all(not str(s["Action"]).startswith("sqs") for s in statements)
    assert not [s for s in statements if "Delete" in str(s["Action"])]


def test_a_viewer_only_ui_reads_data_quarantine_reports_and_models_and_writes_nothing(
    synth: InProcessSynth,
):
    """The default exposure (no certificate) has no sign-in, so the UI is viewer-only: its role writes nothing.
    With sign-in, uploads and alias moves are added (tests/cdk/test_cdk_access.py)."""
    statements = role_statements(synth, "ServingUiPodRole")
    assert s3_grants(statements) == {
        ("s3:GetObject", "BUCKET/data/*", ""),  # list the batches
        ("s3:GetObject", "BUCKET/quarantine/*.error.json", ""),  # the reports, not the rejected batches
        ("s3:GetObject", "BUCKET/validated/*/index.json", ""),  # which batch is a skipped repeat, not the copies
        ("s3:GetObject", "BUCKET/models/*", ""),  # registry: alias, manifests
        ("s3:GetObject", "BUCKET/captures/*", ""),  # live quality and drift (docs/ui.md)
        ("s3:GetObject", "BUCKET/feedback/*", ""),
        ("s3:ListBucket", "BUCKET", "data/*,quarantine/*,models/*,captures/*,feedback/*"),
    }
    # Nothing but these S3 statements and reading its own API key (tests/cdk/test_cdk_access.py): no other service,
    # no Resource "*", no Deny to hide an Allow.
    (ui_key_id, _) = only(synth.resources("AWS::SecretsManager::Secret"), "AccessApiKeysUiKey")
    others = [s for s in statements if not all(a.startswith("s3:") for a in actions(s))]
    assert [(actions(s), s["Resource"]) for s in others] == [(["secretsmanager:GetSecretValue"], {"Ref": ui_key_id})]
    assert all(s["Effect"] == "Allow" and s["Resource"] != "*" and "NotResource" not in s for s in statements)


def test_ui_grants_follow_the_core_layout():
    """The alias and report keys the CDK app grants are the ones the core writes and reads; the alias pattern
    matches every model's alias and none of the other keys under models/."""
    from fnmatch import fnmatchcase

    from cdk.grants import ANY_ALIAS_KEY, CATALOG_INDEX, ERROR_REPORT_SUFFIX, alias_key
    from flywheel.data.batch_store import ERROR_SUFFIX
    from flywheel.data.catalog import INDEX, catalog_prefix
    from flywheel.registry.registrations import schema_key
    from flywheel.registry.store import Registry

    assert ERROR_REPORT_SUFFIX == ERROR_SUFFIX
    assert CATALOG_INDEX == INDEX and fnmatchcase(
        catalog_prefix("validated/", "churn-2") + INDEX, "validated/*/index.json"
    )
    for name in (DEFAULTS.model_name, "churn-2"):
        registry = Registry(None, "bucket", name)
        assert alias_key(name) == registry.alias_key
        assert fnmatchcase(registry.alias_key, ANY_ALIAS_KEY)  # IAM's `*` matches like fnmatch's, `/` included
        for other in (schema_key("models/", name), f"models/{name}/versions/0001/manifest.json"):
            assert not fnmatchcase(other, ANY_ALIAS_KEY), other
