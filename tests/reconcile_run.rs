//! `mesos-operator run` without any Kubernetes configuration fails at once, on one
//! line, with a non-zero exit.

use std::process::Command;

#[test]
fn run_without_a_kubeconfig_exits_non_zero_with_a_clear_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_mesos-operator"))
        .arg("run")
        .env("KUBECONFIG", "/nonexistent/mesos-operator-test/kubeconfig")
        .env("HOME", "/nonexistent/mesos-operator-test")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        // Ports that nothing needs: the failure must come before any bind.
        .env("MESOS_OPERATOR_HEALTH_ADDR", "127.0.0.1:0")
        .env("MESOS_OPERATOR_METRICS_ADDR", "127.0.0.1:0")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    assert!(
        error_lines[0].contains("no usable Kubernetes configuration"),
        "{stderr}"
    );
}
