"""Model names and the data prefixes they become: `data/<name>/...` holds model `<name>`'s batches.

A name is a key prefix and a metric label, so it is checked once here. In a bucket laid out the old way, CSVs
directly under `data/` belong to the default model (`FLYWHEEL_MODEL_NAME`).
"""

from __future__ import annotations

from flywheel.errors import ConflictError
from flywheel.settings import MODEL_NAME, CoreSettings


def check_name(name: str) -> str:
    """A model name: lower-case letters, digits and '-', at most 63 characters (it becomes a prefix and a label)."""
    if not MODEL_NAME.fullmatch(name):  # match() would take a trailing newline (`$`)
        raise ConflictError(f"invalid model name {name!r}: use a-z, 0-9 and '-', starting with a letter or digit")
    return name


def data_prefix(settings: CoreSettings, name: str) -> str:
    """Where model `name`'s batches are uploaded."""
    return f"{settings.data_prefix}{name}/"


def model_of_batch_key(key: str, settings: CoreSettings) -> str | None:
    """The model a key under data/ belongs to by its folder: `data/<name>/...` -> name; a CSV directly under
    `data/` -> the default model (the old layout). None for keys outside data/."""
    if not key.startswith(settings.data_prefix):
        return None
    rest = key[len(settings.data_prefix) :]
    return rest.split("/", 1)[0] if "/" in rest else settings.model_name
