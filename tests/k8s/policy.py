"""Policy checks over rendered Kubernetes objects: what schemas cannot see.

Each check returns human-readable violations (empty when the objects comply), so a test can assert on
the list and a failure names the object and the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

Obj = dict[str, Any]

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def ref(obj: Obj) -> str:
    """`Kind/namespace/name`, for messages."""
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


def workloads(objects: Iterable[Obj]) -> Iterator[Obj]:
    return (o for o in objects if o.get("kind") in WORKLOAD_KINDS)


def pod_spec(workload: Obj) -> Obj:
    return dict(workload["spec"]["template"].get("spec") or {})


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict((workload["spec"]["template"].get("metadata") or {}).get("labels") or {})


def namespace(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("namespace")


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels + matchExpressions); an empty selector matches all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _container_ports(spec: Obj) -> tuple[set[str], set[int]]:
    names: set[str] = set()
    numbers: set[int] = set()
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            numbers.add(int(p["containerPort"]))
            if "name" in p:
                names.add(p["name"])
    return names, numbers


def _port_exists(port: str | int, names: set[str], numbers: set[int]) -> bool:
    return port in names if isinstance(port, str) else int(port) in numbers


def _probe_port(probe: Obj) -> str | int | None:
    for kind in ("httpGet", "tcpSocket", "grpc"):
        if kind in probe:
            return probe[kind].get("port")
    return None


def container_violations(objects: Iterable[Obj]) -> list[str]:
    """Every container: requests and limits, liveness and readiness probes on one of its own ports,
    non-root with a read-only root file system, no privilege escalation, all capabilities dropped."""
    out: list[str] = []
    for w in workloads(objects):
        spec = pod_spec(w)
        pod_sc = spec.get("securityContext") or {}
        names, numbers = _container_ports(spec)
        if not (spec.get("containers") or []):
            out.append(f"{ref(w)}: no containers")
        all_containers = [(c, False) for c in spec.get("containers") or []] + [
            (c, True) for c in spec.get("initContainers") or []
        ]
        for c, is_init in all_containers:
            where = f"{ref(w)} container {c.get('name')}"
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        out.append(f"{where}: no {kind}.{r}")
            if not is_init:
                for probe_name in ("livenessProbe", "readinessProbe"):
                    probe = c.get(probe_name)
                    if not probe:
                        out.append(f"{where}: no {probe_name}")
                        continue
                    port = _probe_port(probe)
                    if port is not None and not _port_exists(port, names, numbers):
                        out.append(f"{where}: {probe_name} port {port!r} is not a container port")
                startup = c.get("startupProbe")
                port = _probe_port(startup) if startup else None
                if port is not None and not _port_exists(port, names, numbers):
                    out.append(f"{where}: startupProbe port {port!r} is not a container port")
            sc = c.get("securityContext") or {}
            if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
                out.append(f"{where}: runAsNonRoot is not true")
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if uid == 0:
                out.append(f"{where}: runs as uid 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                out.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                out.append(f"{where}: capabilities do not drop ALL")
            if sc.get("privileged"):
                out.append(f"{where}: privileged")
    return out


def selector_violations(objects: list[Obj]) -> list[str]:
    """Selectors match labels and ports line up: workload selectors vs their templates, Services vs pods
    and container ports, ServiceMonitors vs Services and their ports, HPA targets, PDBs, NetworkPolicies;
    a workload's serviceAccountName (other than the namespace's `default`) is a ServiceAccount of its namespace
    that the objects define."""
    out: list[str] = []
    loads = list(workloads(objects))
    services = [o for o in objects if o.get("kind") == "Service"]
    accounts = {(namespace(o), o["metadata"]["name"]) for o in objects if o.get("kind") == "ServiceAccount"}

    for w in loads:
        account = pod_spec(w).get("serviceAccountName") or "default"
        if account != "default" and (namespace(w), account) not in accounts:
            out.append(f"{ref(w)}: serviceAccountName {account!r} is not a ServiceAccount of its namespace")

    def pods_for(obj: Obj, selector: Obj | None) -> list[Obj]:
        return [w for w in loads if namespace(w) == namespace(obj) and selector_matches(selector, pod_labels(w))]

    for w in loads:
        if not selector_matches(w["spec"].get("selector"), pod_labels(w)):
            out.append(f"{ref(w)}: selector does not match its pod template labels")

    for s in services:
        selector = s["spec"].get("selector")
        if not selector:
            out.append(f"{ref(s)}: no selector")
            continue
        matched = pods_for(s, {"matchLabels": selector})
        if not matched:
            out.append(f"{ref(s)}: selector {selector} matches no pod template")
        for p in s["spec"].get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            for w in matched:
                names, numbers = _container_ports(pod_spec(w))
                if not _port_exists(target, names, numbers):
                    out.append(f"{ref(s)}: targetPort {target!r} is not a container port of {ref(w)}")

    for sm in (o for o in objects if o.get("kind") == "ServiceMonitor"):
        spec = sm["spec"]
        names_allowed = (spec.get("namespaceSelector") or {}).get("matchNames") or [namespace(sm)]
        matched_svcs = [
            s
            for s in services
            if namespace(s) in names_allowed
            and selector_matches(spec.get("selector"), (s.get("metadata") or {}).get("labels") or {})
        ]
        if not matched_svcs:
            out.append(f"{ref(sm)}: selects no Service")
        for ep in spec.get("endpoints") or []:
            port = ep.get("port")
            for s in matched_svcs:
                if port not in {p.get("name") for p in s["spec"].get("ports") or []}:
                    out.append(f"{ref(sm)}: endpoint port {port!r} is not a named port of {ref(s)}")

    for hpa in (o for o in objects if o.get("kind") == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if not any(
            w["kind"] == target["kind"] and w["metadata"]["name"] == target["name"] and namespace(w) == namespace(hpa)
            for w in loads
        ):
            out.append(f"{ref(hpa)}: scaleTargetRef {target['kind']}/{target['name']} does not exist")

    for pdb in (o for o in objects if o.get("kind") == "PodDisruptionBudget"):
        if not pods_for(pdb, pdb["spec"].get("selector")):
            out.append(f"{ref(pdb)}: selector matches no pod template")

    for np in (o for o in objects if o.get("kind") == "NetworkPolicy"):
        selector = np["spec"].get("podSelector") or {}
        if not selector:
            continue  # namespace-wide (default deny)
        selected = pods_for(np, selector)
        if not selected:
            out.append(f"{ref(np)}: podSelector matches no pod template")
        for rule in np["spec"].get("ingress") or []:
            for p in rule.get("ports") or []:
                port = p.get("port")
                for w in selected:
                    names, numbers = _container_ports(pod_spec(w))
                    if port is not None and not _port_exists(port, names, numbers):
                        out.append(f"{ref(np)}: ingress port {port!r} is not a container port of {ref(w)}")
    return out
