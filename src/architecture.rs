//! The dependency rules of `ARCHITECTURE.md`, checked on the source tree: the
//! log and the master import nothing from the operator (tests included), and no
//! module of the operator imports one that imports it back, neither among the
//! operator's top-level modules nor among the siblings inside one of them.
//!
//! A module here is a file's path under `src/` (a file's own submodules, in the
//! directory of the same name, belong to it); an import is any path through
//! `crate::operator::...` or `super::...` in its text, code and tests alike.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`, as paths relative to `src/`.
fn rust_files(src: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(src, &path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            if let Ok(relative) = path.strip_prefix(src) {
                files.push(relative.to_owned());
            }
        }
    }
}

/// `operator/kubernetes/reconcile/recovery.rs` -> `["operator", "kubernetes",
/// "reconcile", "recovery"]`; `mod.rs` names its directory.
fn module_path(file: &Path) -> Vec<String> {
    let mut segments: Vec<String> = file
        .with_extension("")
        .components()
        .map(|component| component.as_os_str().to_string_lossy().into_owned())
        .collect();
    if segments.last().is_some_and(|last| last == "mod") {
        segments.pop();
    }
    segments
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The module paths `text` names below `prefix` (`crate::operator::`), as
/// segment lists (`["kubernetes", "reconcile", ...]`), brace groups expanded one
/// level deep.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut start = 0;
    while let Some(at) = text[start..].find(prefix) {
        let at = start + at;
        start = at + prefix.len();
        if text[..at].ends_with(prefix) {
            continue;
        }
        let rest = &text[start..];
        let mut segments = Vec::new();
        let mut cursor = rest;
        loop {
            if let Some(group) = cursor.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let item = item.trim();
                    let mut path = segments.clone();
                    path.extend(
                        item.split("::")
                            .map(identifier)
                            .filter(|segment| !segment.is_empty())
                            .map(str::to_owned),
                    );
                    found.push(path);
                }
                segments.clear();
                break;
            }
            let segment = identifier(cursor);
            if segment.is_empty() {
                break;
            }
            segments.push(segment.to_owned());
            cursor = &cursor[segment.len()..];
            match cursor.strip_prefix("::") {
                Some(next) => cursor = next,
                None => break,
            }
        }
        if !segments.is_empty() {
            found.push(segments);
        }
    }
    found
}

/// Edges between the modules at `depth` segments (`["operator", X]` is depth 2)
/// that share the first `depth - 1` segments, from every file below them.
fn edges(
    files: &BTreeMap<Vec<String>, String>,
    depth: usize,
) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, text) in files {
        if module.len() < depth || module[0] != "operator" {
            continue;
        }
        let from = module[..depth].to_vec();
        let mut targets: Vec<Vec<String>> = paths_after(text, "crate::operator::")
            .into_iter()
            .map(|path| {
                let mut full = vec!["operator".to_owned()];
                full.extend(path);
                full
            })
            .collect();
        // `super::x` in a file names a sibling of that file's module; each
        // further `super` goes one level up (a chain is read once, from its start).
        // Inside the file's inline `mod tests { .. }` (by convention its last
        // item) the module is one level deeper: there `super::` is the file itself.
        let (body, tests) = match text.find("\nmod tests {") {
            Some(at) => text.split_at(at),
            None => (text.as_str(), ""),
        };
        let mut tests_module = module.clone();
        tests_module.push("tests".to_owned());
        for (scope, part) in [(module, body), (&tests_module, tests)] {
            for path in paths_after(part, "super::") {
                let ups = 1 + path
                    .iter()
                    .take_while(|segment| *segment == "super")
                    .count();
                if ups > scope.len() {
                    continue;
                }
                let mut full = scope[..scope.len() - ups].to_vec();
                full.extend(path.into_iter().skip(ups - 1));
                targets.push(full);
            }
        }
        for target in targets {
            if target.len() >= depth
                && target[..depth - 1] == from[..depth - 1]
                && target[..depth] != from[..]
                && files
                    .keys()
                    .any(|known| known.starts_with(&target[..depth]))
            {
                edges
                    .entry(from.clone())
                    .or_default()
                    .insert(target[..depth].to_vec());
            }
        }
    }
    edges
}

/// Pairs of modules that import each other, directly or through others.
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let reachable = |start: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(node) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found = Vec::new();
    for (from, targets) in edges {
        for to in targets {
            if from < to && reachable(to).contains(from) {
                found.push(format!("{} <-> {}", from.join("::"), to.join("::")));
            }
        }
    }
    found
}

fn source_tree() -> BTreeMap<Vec<String>, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let text = fs::read_to_string(src.join(&file)).ok()?;
            Some((module_path(&file), text))
        })
        .collect()
}

#[test]
fn the_log_and_the_master_import_nothing_from_the_operator() {
    let tree = source_tree();
    assert!(tree.len() > 50, "the source tree was not found");
    let offenders: Vec<String> = tree
        .iter()
        .filter(|(module, _)| matches!(module[0].as_str(), "log" | "master"))
        .filter(|(_, text)| {
            ["crate::operator", "mesos_operator::operator"]
                .iter()
                .any(|path| text.contains(path))
        })
        .map(|(module, _)| module.join("::"))
        .collect();
    assert!(
        offenders.is_empty(),
        "they import the operator: {offenders:?}"
    );
}

#[test]
fn no_module_of_the_operator_imports_one_that_imports_it_back() {
    let tree = source_tree();
    let max_depth = tree.keys().map(Vec::len).max().unwrap_or(0);
    let mut found = Vec::new();
    for depth in 2..=max_depth {
        found.extend(cycles(&edges(&tree, depth)));
    }
    assert!(found.is_empty(), "import cycles: {found:#?}");
}

#[test]
fn the_cycle_check_sees_a_planted_cycle() {
    let mut tree = BTreeMap::new();
    let module = |path: &str| path.split("::").map(str::to_owned).collect::<Vec<_>>();
    tree.insert(
        module("operator::a"),
        "use crate::operator::b::{Thing, other::More};".to_owned(),
    );
    tree.insert(module("operator::b"), "fn f() {}".to_owned());
    tree.insert(
        module("operator::b::other"),
        "use super::super::a::X;".to_owned(),
    );
    tree.insert(module("operator::c::x"), "use super::y::Z;".to_owned());
    tree.insert(
        module("operator::c::y"),
        "crate::operator::c::x::f()".to_owned(),
    );
    // A file's test module reaching a sibling file through `super::super`.
    tree.insert(
        module("operator::d::p"),
        "fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::q::g;\n}\n"
            .to_owned(),
    );
    tree.insert(
        module("operator::d::q"),
        "use crate::operator::d::p::f;".to_owned(),
    );
    assert_eq!(
        cycles(&edges(&tree, 2)),
        vec!["operator::a <-> operator::b"]
    );
    assert_eq!(
        cycles(&edges(&tree, 3)),
        vec![
            "operator::c::x <-> operator::c::y",
            "operator::d::p <-> operator::d::q"
        ]
    );
}
