"""Shared helpers of the chart tests: where things are, rendering the chart with
Helm's own engine, and validating objects against Kubernetes' schemas and against
the MesosMasterCluster CRD (its openAPIV3Schema and its CEL rules)."""

from __future__ import annotations

import copy
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import celpy
import celpy.celtypes as celtypes
import jsonschema
import kubernetes_validate
import yaml
from helm_python.chart import Chart

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "mesos-operator"
CHART_CRD = CHART_DIR / "crds" / "mesosmastercluster.yaml"
# Generated from the Rust types by `mesos-operator crd`; the source of truth.
REPO_CRD = REPO / "crds" / "mesosmastercluster.yaml"
DEPLOY_DIR = REPO / "deploy"
EXAMPLES_DIR = DEPLOY_DIR / "examples"

# The Kubernetes version whose schemas every rendered object must satisfy.
KUBE_VERSION = "1.32"

RELEASE = "mesos-operator"
NAMESPACE = "mesos-operator"

CRD_GROUP = "mesos.operator.dev"
CRD_VERSION = "v1alpha1"
CRD_KIND = "MesosMasterCluster"
CRD_API_VERSION = f"{CRD_GROUP}/{CRD_VERSION}"


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_yaml_file(path: Path) -> list[dict[str, Any]]:
    return load_yaml_documents(path.read_text())


@lru_cache(maxsize=1)
def chart() -> Chart:
    return Chart.load(CHART_DIR)


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """The chart's templates rendered offline: template path -> manifest text
    (NOTES.txt included). Raises HelmValuesError when the schema refuses values."""
    return chart().render(values or {}, name=RELEASE, namespace=NAMESPACE)


def render_objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The Kubernetes objects a release would create from its templates."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(load_yaml_documents(text))
    return objects


def notes(values: dict[str, Any] | None = None) -> str:
    rendered = render(values)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def of_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj.get("kind") == kind]


def the_one(objects: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def describe(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_builtin(obj: dict[str, Any]) -> None:
    """Validate against Kubernetes' own schema for this version, strictly (unknown
    fields are errors, as with `kubectl apply --validate=strict`)."""
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        # The library's message embeds the whole schema; the path and reason are
        # what a reader needs.
        where = "/".join(str(part) for part in err.path) or "<root>"
        raise AssertionError(f"{describe(obj)} is invalid at {where}: {err.message}") from None


# ---------------------------------------------------------------------------
# The CRD: its openAPIV3Schema as JSON Schema, and its CEL rules.


def crd_document(path: Path) -> dict[str, Any]:
    docs = load_yaml_file(path)
    assert len(docs) == 1, f"{path} should hold exactly one document, holds {len(docs)}"
    return docs[0]


def crd_version_schema(crd: dict[str, Any], version: str = CRD_VERSION) -> dict[str, Any]:
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return entry["schema"]["openAPIV3Schema"]
    raise AssertionError(f"the CRD has no version {version}")


def _as_json_schema(node: Any, top: bool = False) -> Any:
    """Turn a structural OpenAPI v3 schema into a JSON Schema (draft 4, whose
    boolean exclusiveMinimum matches OpenAPI 3.0) with the API server's semantics:

    - `nullable: true` admits null;
    - an object with `properties` and neither `additionalProperties` nor
      `x-kubernetes-preserve-unknown-fields` refuses unknown fields, as kubectl's
      strict field validation (the default since 1.27) does;
    - the top level admits apiVersion, kind and metadata, which the API server
      adds to every CRD schema.
    """
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _as_json_schema(value) for key, value in node.items()}
    if out.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"]
    if top:
        out.setdefault("properties", {})
        out["properties"].setdefault("apiVersion", {"type": "string"})
        out["properties"].setdefault("kind", {"type": "string"})
        out["properties"].setdefault("metadata", {"type": "object"})
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


# Kubernetes' CEL quantity library (isQuantity, quantity(...).isGreaterThan(...)
# and friends), which the generated CRD's rules use and cel-python lacks. The
# grammar is resource.Quantity's: <sign><number><suffix>.
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>[KMGTPE]i)|(?P<decimal>[mkMGTPE])|[eE](?P<exponent>[+-]?[0-9]+))?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def _parse_quantity(text: str) -> Decimal | None:
    match = _QUANTITY.match(str(text))
    if match is None:
        return None
    try:
        value = Decimal(match["number"])
    except InvalidOperation:
        return None
    if match["binary"]:
        return value * _BINARY[match["binary"]]
    if match["decimal"]:
        return value * _DECIMAL[match["decimal"]]
    if match["exponent"]:
        return value.scaleb(int(match["exponent"]))
    return value


class _Quantity:
    def __init__(self, value: Decimal) -> None:
        self.value = value


def _quantity(text: Any) -> _Quantity:
    value = _parse_quantity(str(text))
    if value is None:
        raise ValueError(f"{text!r} is not a quantity")
    return _Quantity(value)


def _compare(a: _Quantity, b: _Quantity) -> int:
    return (a.value > b.value) - (a.value < b.value)


CEL_KUBERNETES_FUNCTIONS = {
    "isQuantity": lambda text: celtypes.BoolType(_parse_quantity(str(text)) is not None),
    "quantity": _quantity,
    "isGreaterThan": lambda a, b: celtypes.BoolType(_compare(a, b) > 0),
    "isLessThan": lambda a, b: celtypes.BoolType(_compare(a, b) < 0),
    "compareTo": lambda a, b: celtypes.IntType(_compare(a, b)),
    "sign": lambda a: celtypes.IntType((a.value > 0) - (a.value < 0)),
    "isInteger": lambda a: celtypes.BoolType(a.value == a.value.to_integral_value()),
    "asInteger": lambda a: celtypes.IntType(int(a.value)),
    "asApproximateFloat": lambda a: celtypes.DoubleType(float(a.value)),
}


def _cel_rule_failures(schema: dict[str, Any], value: Any, where: str) -> list[str]:
    """Evaluate every x-kubernetes-validations rule that applies to `value`,
    walking the schema beside the value. Transition rules (those using oldSelf)
    do not apply when an object is created, so they are skipped, as the API
    server skips them."""
    failures: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        expression = rule["rule"]
        if "oldSelf" in expression:
            continue
        env = celpy.Environment()
        try:
            program = env.program(env.compile(expression), functions=CEL_KUBERNETES_FUNCTIONS)
            result = program.evaluate({"self": celpy.json_to_cel(value)})
        except Exception as err:  # noqa: BLE001 - the rule, not the test, is at fault
            raise AssertionError(
                f"cannot evaluate the CRD's CEL rule {expression!r} at {where}: {err}"
            ) from None
        if isinstance(result, Exception):  # celpy returns some evaluation errors
            raise AssertionError(f"the CRD's CEL rule {expression!r} at {where} failed: {result}")
        if not bool(result):
            failures.append(f"{where}: {rule.get('message', expression)}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            child_schema = properties.get(key, extra if isinstance(extra, dict) else None)
            if child_schema is not None:
                failures.extend(_cel_rule_failures(child_schema, child, f"{where}.{key}"))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):
            failures.extend(_cel_rule_failures(schema["items"], child, f"{where}[{index}]"))
    return failures


def crd_errors(crd: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Why the API server would refuse `obj` as an instance of `crd` (empty when
    it would accept it): group/version/kind, the openAPIV3Schema, the CEL rules."""
    errors: list[str] = []
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    version = obj.get("apiVersion", "").rpartition("/")[2]
    if obj.get("apiVersion") != f"{group}/{version}" or obj.get("kind") != kind:
        return [f"{describe(obj)} is not a {group} {kind}"]
    schema = crd_version_schema(crd, version)
    validator = jsonschema.Draft4Validator(_as_json_schema(copy.deepcopy(schema), top=True))
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
        where = ".".join(str(part) for part in err.path) or "<root>"
        errors.append(f"{where}: {err.message}")
    if not errors:
        errors.extend(_cel_rule_failures(schema, obj, "self"))
    return errors
