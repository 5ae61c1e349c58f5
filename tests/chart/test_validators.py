"""The validators the other tests rely on: a check that cannot fail proves
nothing, so each is shown refusing what the API server refuses."""

from __future__ import annotations

from decimal import Decimal

import pytest

from manifests import _as_json_schema, _parse_quantity, crd_errors, validate_builtin


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", Decimal(2**30)),
        ("500m", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        ("2k", Decimal(2000)),
        ("1e3", Decimal(1000)),
        ("-1Mi", Decimal(-(2**20))),
        ("+.5", Decimal("0.5")),
    ],
)
def test_quantities_parse_as_kubernetes_parses_them(text: str, value: Decimal) -> None:
    assert _parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1GB", "1 Gi", "Gi", "1.2.3"])
def test_non_quantities_are_refused(text: str) -> None:
    assert _parse_quantity(text) is None


def test_builtin_validation_refuses_unknown_fields() -> None:
    with pytest.raises(AssertionError, match="replica"):
        validate_builtin(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
             "spec": {"replica": 1, "selector": {}, "template": {}}}
        )


def test_crd_validation_applies_nullable_and_strict_fields() -> None:
    schema = _as_json_schema(
        {"type": "object", "properties": {"a": {"type": "string", "nullable": True}}}, top=True
    )
    assert schema["properties"]["a"]["type"] == ["string", "null"]
    assert schema["additionalProperties"] is False
    assert "metadata" in schema["properties"]


def test_crd_validation_evaluates_cel_rules() -> None:
    crd = {
        "spec": {
            "group": "example.dev",
            "names": {"kind": "Thing"},
            "versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {"size": {
                    "x-kubernetes-int-or-string": True,
                    "x-kubernetes-validations": [{
                        "rule": "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))",
                        "message": "size must be positive",
                    }],
                }}}},
            }}}],
        }
    }

    def thing(size: str) -> dict:
        return {"apiVersion": "example.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"size": size}}

    assert crd_errors(crd, thing("1Gi")) == []
    assert crd_errors(crd, thing("0")) == ["self.spec.size: size must be positive"]
    assert crd_errors(crd, thing("many")) == ["self.spec.size: size must be positive"]
