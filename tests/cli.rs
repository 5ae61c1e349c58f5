//! The `mesos-operator` binary: `crd` and `plan`.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesos-operator"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn crd_prints_the_checked_in_yaml() {
    let output = run(&["crd"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/mesosmastercluster.yaml"
    ))
    .expect("crds/mesosmastercluster.yaml exists");
    assert_eq!(stdout(&output), checked_in);
}

#[test]
fn plan_three_to_five_restarts_three_then_starts_two() {
    let output = run(&["plan", "--from", "3", "--to", "5"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("3 -> 5 masters (quorum 2 -> 3): 5 steps"),
        "{text}"
    );
    assert_eq!(text.matches("restart mmc-").count(), 3, "{text}");
    assert!(text.contains("4. start mmc-3 with --quorum=3"), "{text}");
    assert!(text.contains("5. start mmc-4 with --quorum=3"), "{text}");
}

#[test]
fn plan_json_lists_numbered_steps() {
    let output = run(&["plan", "--from", "5", "--to", "3", "--output", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let steps: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let steps = steps.as_array().expect("a list of steps");
    assert_eq!(steps.len(), 5);
    assert_eq!(steps[0]["number"], 1);
    assert_eq!(steps[0]["step"]["action"], "removeMember");
    assert_eq!(steps[0]["step"]["member"], 4);
}

#[test]
fn plan_wipe_exit_warns_that_the_registry_is_lost() {
    let output = run(&[
        "plan",
        "--from",
        "1",
        "--to",
        "3",
        "--single-master-exit",
        "wipe",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("REGISTRY IS LOST"));
    let preserve = stdout(&run(&["plan", "--from", "1", "--to", "3"]));
    assert!(preserve.contains("export the registry"), "{preserve}");
    assert!(
        preserve.contains("import the exported registry"),
        "{preserve}"
    );
}

#[test]
fn plan_refuses_even_zero_and_too_many_masters() {
    for (from, to) in [("4", "5"), ("3", "0"), ("3", "11"), ("-1", "3")] {
        let output = run(&["plan", "--from", from, "--to", to]);
        assert!(!output.status.success(), "{from} -> {to} accepted");
        let message = stderr(&output);
        assert!(message.contains("must be odd"), "{message}");
        assert!(!message.contains("panicked"), "{message}");
    }
}
