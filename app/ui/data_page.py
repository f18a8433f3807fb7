"""Data page: upload a CSV batch for the chosen model (into data/<name>/), list its batches (with why one is not
trained on, when the trainer left it out) and the quarantined ones with their reasons."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pandas as pd
import streamlit as st
from botocore.exceptions import BotoCoreError, ClientError

from app.ui import auth, clients, display, picker
from app.ui.uploads import put_batch
from flywheel.data.catalog import catalog_prefix, indexed, repeats
from flywheel.data.uploads import BatchExists
from flywheel.names import data_prefix
from flywheel.settings import CoreSettings


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


@st.cache_data(ttl=10, show_spinner=False)
def _load(bucket: str, default_model: str, name: str) -> dict[str, Any]:
    """Model `name`'s objects under data/, its quarantine reports and its production version's batches
    (cached briefly)."""
    core = clients.bucket_settings(bucket, default_model)
    store, registry = clients.batch_store(core, name), clients.registry(core, name)
    alias = registry.alias()
    trained: list[str] = []
    left_out: dict[str, str] = {}
    if alias is not None:
        lineage = registry.manifest(alias.version)["data"]
        trained = [b["key"] for b in lineage["batches"]]
        left_out = {b["key"]: f"left out of v{alias.version}: {b['reason']}" for b in lineage.get("left_out", [])}
    listed = sorted(store.objects(), key=lambda o: o["LastModified"], reverse=True)
    objects: list[dict[str, Any]] = [
        {"key": o["Key"], "size": int(o["Size"]), "modified": o["LastModified"].isoformat(timespec="seconds")}
        for o in listed
    ]
    for o, obj in zip(objects[:MAX_UPLOADERS], listed, strict=False):
        o["uploaded by"] = _uploader(bucket, o["key"], str(obj.get("ETag", "")))
    # the trainer writes its index on its first run; before a version serves there may be none, and the UI may not
    # list validated/ (IAM: reading the index only), so a missing one would read as forbidden
    notes, problem = _skipped(core, name) if alias is not None else ({}, "")
    return {
        "objects": objects,
        "quarantined": store.quarantined(),
        "production": alias.version if alias else None,
        "trained": trained,
        "notes": {**left_out, **notes},
        "notes_problem": problem,
    }


def _skipped(core: CoreSettings, name: str) -> tuple[dict[str, str], str]:
    """({key: why the trainer skips it} for each exact repeat of an earlier batch, per the trainer's index of
    validated batches (validated/<name>/index.json); why that index cannot be read, else "")."""
    prefix = catalog_prefix(core.validated_prefix, name)
    try:
        copies = repeats(indexed(clients.s3(), core.bucket, prefix))
    except (ClientError, BotoCoreError) as e:
        return {}, f"Cannot read s3://{core.bucket}/{prefix}index.json (the batches the trainer skips as repeats): {e}"
    return {key: f"skipped: same content as {first}" for key, first in copies.items()}, ""


MAX_UPLOADERS = 100  # one HEAD per batch, once: the newest ones say who uploaded them


@st.cache_data(max_entries=10_000, show_spinner=False)
def _metadata(bucket: str, key: str, etag: str) -> dict[str, str]:
    """A batch's object metadata. Batches are create-only, so for a (key, ETag) it never changes: read once, not
    on every reload (a failed read raises, so it is not cached)."""
    meta: dict[str, str] = clients.s3().head_object(Bucket=bucket, Key=key).get("Metadata", {})
    return meta


def _uploader(bucket: str, key: str, etag: str) -> str:
    """Who uploaded a batch (object metadata `uploaded-by`, else the tool from `uploaded-via`, else unknown)."""
    try:
        meta = _metadata(bucket, key, etag)
    except ClientError:
        return "?"
    if meta.get("uploaded-by"):
        return unquote(meta["uploaded-by"])
    return f"({meta['uploaded-via']})" if meta.get("uploaded-via") else "—"


def _where(core: CoreSettings, name: str) -> str:
    """Where model `name`'s batches are listed from."""
    folder = data_prefix(core, name)
    return f"{folder} and {core.data_prefix}*" if name == core.model_name else folder


FLASH = "data_flash"  # (kind, message) of the last upload, shown once


def _submit(core: CoreSettings, name: str) -> None:
    """The form's callback: re-check the operator role at the moment of the write (never trust that the form
    was shown), then upload with the identity recorded."""
    file, save_as = st.session_state.get("upload-file"), str(st.session_state.get("upload-save-as") or "")
    who = auth.operator()
    if who is None:
        st.session_state[FLASH] = ("error", auth.REFUSED.format(what="upload a batch"))
        return
    if file is None:
        st.session_state[FLASH] = ("warning", "Choose a CSV file first.")
        return
    prefix = data_prefix(core, name)
    try:
        key = put_batch(clients.s3(), core.bucket, prefix, save_as.strip() or file.name, file.getvalue(),
                        uploaded_by=who.label)  # fmt: skip
    except BatchExists as e:
        st.session_state[FLASH] = ("error", e.message)
        return
    except (ClientError, BotoCoreError) as e:
        st.session_state[FLASH] = ("error", f"Upload failed: {e}")
        return
    _load.clear()
    picker.clear()  # the trainer registers the default model on its first run
    st.session_state[FLASH] = ("success", (
        f"Uploaded {file.name} as s3://{core.bucket}/{key} ({human_bytes(file.size)}) by {who.label}. The bucket "
        "notifies the trainer: it validates the batch and retrains; a new version appears on the Models page, or "
        "the batch shows up under Quarantined below with the reason."
    ))  # fmt: skip


def _upload(core: CoreSettings, name: str) -> None:
    flash = st.session_state.pop(FLASH, None)
    if flash:
        {"success": st.success, "warning": st.warning}.get(flash[0], st.error)(flash[1])
    if not auth.current_identity().is_operator:
        st.caption(f"Uploading a batch for {name} is for operators (or `flywheel drop FILE --model {name}`).")
        return
    with st.form("upload", clear_on_submit=True):
        st.markdown(f"**Upload a batch for {name}** into `s3://{core.bucket}/{data_prefix(core, name)}`")
        st.file_uploader("Choose the CSV file (header = the schema's features and target)", type=["csv"],
                         key="upload-file")  # fmt: skip
        st.text_input("Save as (optional)", placeholder="the file's name", help="batches are never replaced",
                      key="upload-save-as")  # fmt: skip
        # the file uploader's own button reads "Upload" (choosing the file); this one sends the batch to S3
        st.form_submit_button(f"Upload batch to {name}", key="upload-batch", icon=":material/cloud_upload:",
                              on_click=_submit, args=(core, name))  # fmt: skip


def _accepted(loaded: dict[str, Any], core: CoreSettings, name: str) -> None:
    objects = loaded["objects"]
    st.subheader(f"Batches of {name} ({len(objects)})")
    st.caption(f"Under {_where(core, name)}")
    if not objects:
        st.info("No batch yet.")
        return
    production, trained, notes = loaded["production"], set(loaded["trained"]), loaded["notes"]
    frame = pd.DataFrame(objects)
    frame["size"] = frame["size"].map(human_bytes)
    frame["uploaded by"] = frame["uploaded by"].fillna("") if "uploaded by" in frame else ""
    used = f"in v{production}" if production else "in production"
    frame[used] = frame["key"].map(lambda k: k in trained)
    frame["note"] = frame["key"].map(lambda k: "" if k in trained else notes.get(k, ""))
    display.show(frame, hide_index=True, column_config={
        used: st.column_config.CheckboxColumn(used, width="small", help="in the production version's training data"),
        "note": st.column_config.TextColumn("note", help="why the trainer does not train on this batch"),
    })  # fmt: skip
    st.caption(
        "Batches that pass validation stay here; a batch just uploaded stays here until the trainer has run."
        + (f" '{used}': in the training data of production v{production}." if production else "")
        + " A batch with the same bytes as an earlier one is skipped: the trainer counts the content once."
    )
    if loaded["notes_problem"]:
        st.caption(loaded["notes_problem"])


def _quarantined(loaded: dict[str, Any], core: CoreSettings, name: str) -> None:
    reports = loaded["quarantined"]
    st.subheader(f"Quarantined ({len(reports)})")
    if not reports:
        st.caption(f"No rejected batch of {name} under {core.quarantine_prefix}{name}/.")
        return
    for i, report in enumerate(reports):
        with st.expander(f"{report.get('file')} · {report.get('at', '')}", expanded=i == 0, icon=":material/block:"):
            st.error(report.get("error") or "rejected")
            problems = report.get("problems") or []
            if problems:
                columns = [c for c in ("check", "column", "message") if any(c in p for p in problems)]
                display.show(pd.DataFrame(problems)[columns], hide_index=True)
            st.caption(
                f"Kept as s3://{core.bucket}/{report.get('quarantined_as')} (report beside it, "
                f"{report.get('quarantined_as')}.error.json)."
            )


def render() -> None:
    name = picker.current().name
    st.header(f"Data · {name}")
    core = clients.bucket_or_none()
    if core is None:
        return
    _upload(core, name)
    if st.button("Refresh", icon=":material/refresh:"):
        _load.clear()
        picker.clear()
    try:
        loaded = _load(core.bucket, core.model_name, name)
    except (ClientError, BotoCoreError) as e:
        st.error(f"Cannot read s3://{core.bucket}/: {e}")
        return
    _accepted(loaded, core, name)
    _quarantined(loaded, core, name)
