"""API keys for `flywheel up`: the replicas check keys as in the cloud, from a local key store.

Made once and kept with the state (`.flywheel/api/`, git-ignored, files 0600): the store of hashes, the UI's own
key and a key for you (curl, scripts, `flywheel` commands; stack.json points at it). A key cannot be recovered
from its hash, so the plain keys are kept beside the store; delete the directory to start afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flywheel.access import api_keys


@dataclass(frozen=True)
class LocalKeys:
    store: Path
    ui_key: str
    client_key: str
    operator_key: str


def _key_file(path: Path, name: str, role: api_keys.Role, store: api_keys.FileStore) -> str:
    """The plain key kept in `path`, made (and added to the store) when missing or no longer in the store."""
    records = store.load()
    if path.exists():
        key = path.read_text().strip()
        if any(r.sha256 == api_keys.digest(key) for r in records):
            return key
    key, record = api_keys.new_key(name, role, "flywheel up")
    store.save([*(r for r in records if r.name != name), record])
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def ensure_local_keys(state_dir: Path) -> LocalKeys:
    folder = state_dir / "api"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    store = api_keys.FileStore(folder / "keys.json")
    return LocalKeys(
        store=store.path,
        ui_key=_key_file(folder / "ui.key", "local-ui", "client", store),
        client_key=_key_file(folder / "client.key", "local-client", "client", store),
        operator_key=_key_file(folder / "operator.key", "local-operator", "operator", store),
    )


def ensure_signing_keys(private: Path, public: Path, say: Callable[[str], None]) -> None:
    """A P-256 key pair for signed versions, made on the first start (the private key file is mode 0600)."""
    from flywheel.registry.signing import generate_key_pair

    if private.exists() and public.exists():
        return
    private.unlink(missing_ok=True)
    generate_key_pair(private, public)
    say(f"new signing key pair in {private.parent} (versions signed by an earlier key are refused)")
