"""The `flywheel` command. Every subcommand has --help; S3 is reached through boto3 (AWS_ENDPOINT_URL)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from flywheel.cli import apikeys, data, feedback, identity, local_stack, mlflow_cmd, models, rollout, schemas, traffic
from flywheel.cli.stack_env import no_stack_hint, settings_error, use_local_stack
from flywheel.errors import FlywheelError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", help="bucket (default: $FLYWHEEL_BUCKET)")
    p.add_argument("--model", help="which model (default: the default model, $FLYWHEEL_MODEL_NAME or 'savings')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flywheel",
        description="Keep a scikit-learn model fresh: drop data, retrain, gate, serve. "
        "Settings come from FLYWHEEL_* variables (docs/settings.md); S3 from AWS_ENDPOINT_URL when set.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    data.add_parsers(add, _common)
    models.add_parsers(add, _common)
    identity.add_parsers(add)  # `flywheel identity token`: local sign-in for the UI
    apikeys.add_parsers(add)  # `flywheel apikey create|list|revoke`
    rollout.add_parsers(add, _common)  # `flywheel rollout status|start|promote|abort|judge|policy`
    feedback.add_parsers(add, _common)  # `flywheel feedback FILE`, `flywheel quality`
    schemas.add_parsers(add)  # `flywheel schema infer FILE --target COLUMN`
    traffic.add_parsers(add)  # `flywheel traffic`: sample rows through the API from several keys
    mlflow_cmd.add_parsers(add, _common)  # `flywheel mlflow sync`: repair the MLflow mirror
    local_stack.add_parsers(add)  # `flywheel up`, `serve`, `ui`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
    )
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    offline = {"up", "sample-data", "validate", "serve", "ui", "schema"}  # `validate --model` reads the bucket
    bucketless = args.command in offline and not (args.command == "validate" and args.model)
    local = use_local_stack() if not bucketless else None
    try:
        code: int = args.func(args)
    except FlywheelError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    except ValidationError as e:
        print(f"error: {settings_error(e, local)}", file=sys.stderr)
        return 2
    except EndpointConnectionError as e:
        hint = f" (from {local}: is `make up` still running?)" if local else ""
        print(f"error: cannot reach S3 at {e.kwargs.get('endpoint_url')}{hint}", file=sys.stderr)
        return 2
    except (NoCredentialsError, NoRegionError) as e:  # a configuration problem: one line, never a traceback
        print(f"error: {e} (for a deployed stack, configure AWS credentials and region; for a local one, "
              f"{no_stack_hint()})", file=sys.stderr)  # fmt: skip
        return 2
    except ClientError as e:
        err = e.response.get("Error", {})
        print(f"error: AWS refused {e.operation_name}: {err.get('Code')}: {err.get('Message')}", file=sys.stderr)
        return 2
    except BotoCoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return code
