//! The generated CRD: current in `crds/`, and carrying the rules `kubectl apply`
//! enforces.

use mesos_operator::operator::api::crd_yaml;

const CRD_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/mesosmastercluster.yaml");

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let generated = crd_yaml().expect("the CRD renders");
    let checked_in = std::fs::read_to_string(CRD_PATH).unwrap_or_default();
    assert!(
        generated == checked_in,
        "crds/mesosmastercluster.yaml is stale; regenerate it with:\n    \
         cargo run --bin mesos-operator -- crd > crds/mesosmastercluster.yaml"
    );
}

#[test]
fn schema_bounds_and_cel_rules_reject_bad_replicas_and_storage() {
    let crd: serde_json::Value =
        serde_yaml::from_str(&crd_yaml().expect("the CRD renders")).expect("the CRD parses");
    let version = &crd["spec"]["versions"][0];
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let replicas = &spec["replicas"];
    assert_eq!(replicas["minimum"].as_f64(), Some(1.0));
    assert_eq!(replicas["maximum"].as_f64(), Some(9.0));
    let rules = replicas["x-kubernetes-validations"].to_string();
    assert!(rules.contains("self % 2 == 1"), "{rules}");
    assert!(rules.contains("replicas must be odd"), "{rules}");

    let size_rules = spec["storage"]["properties"]["size"]["x-kubernetes-validations"].to_string();
    assert!(
        size_rules.contains("isGreaterThan(quantity('0'))"),
        "{size_rules}"
    );

    let modes = spec["singleMasterExit"]["enum"].to_string();
    assert!(
        modes.contains("Preserve") && modes.contains("Wipe"),
        "{modes}"
    );
    assert_eq!(spec["port"]["default"].as_u64(), Some(5050));
}

#[test]
fn crd_names_status_subresource_and_printer_columns() {
    let crd: serde_json::Value =
        serde_yaml::from_str(&crd_yaml().expect("the CRD renders")).expect("the CRD parses");
    assert_eq!(crd["spec"]["group"], "mesos.operator.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "mmc");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .filter_map(|column| column["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        ["Replicas", "Ready", "Quorum", "Target", "Phase", "Step", "Age"]
    );
}
