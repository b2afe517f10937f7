//! The layer map of `src/lib.rs`, kept true: a module may use only the
//! layers below its own. Read from the source, so a `use` that points up
//! fails here before it becomes a cycle.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module's layer, lowest first, as `src/lib.rs` draws them.
const LAYERS: &[(&str, u8)] = &[
    ("domain", 0),
    ("alloc", 0),
    ("metrics", 0),
    ("identity", 1),
    ("config", 1),
    ("store", 2),
    ("bundle", 2),
    ("search", 3),
    ("protocol", 3),
    ("error", 3),
    ("service", 4),
    ("sync", 5),
    ("setup", 5),
    ("grpc", 6),
    ("web", 7),
    ("node", 8),
    ("fuzzing", 8),
    ("cluster", 9),
    ("cli", 10),
];

/// Inside `store`, the same rule: shared helpers are leaves, and each
/// module uses only those below it.
const STORE_LAYERS: &[(&str, u8)] = &[
    ("tx", 0),
    ("s3", 0),
    ("typed", 1),
    ("space", 1),
    ("staging", 1),
    ("files", 2),
    ("keys", 2),
    ("encoding", 2),
    ("trees", 3),
    ("fuzzing", 3),
    ("audit_index", 3),
    ("search_queue", 3),
    ("audit", 4),
    ("counts", 4),
    ("audit_search", 5),
    ("merkle", 5),
    ("sharing", 5),
    ("blobs", 5),
    ("users", 5),
    ("records", 6),
    ("backfill", 6),
    ("replica", 7),
    ("commit", 7),
    ("disk", 8),
    ("recount", 8),
];

/// The top-level modules a source file names through `crate::…`.
fn uses(source: &str) -> Vec<String> {
    names_after(source, "crate::")
}

/// The modules named right after `prefix` (`crate::`, `super::`), also in
/// a group (`crate::{a, b::C}`), outside comment lines.
fn names_after(source: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in source.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        }
    }
    out
}

fn visit(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_the_layers_below_its_own() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let own = *layers
            .get(top.as_str())
            .unwrap_or_else(|| panic!("{top} (in {}) has no layer in LAYERS", rel.display()));
        checked += 1;
        for used in uses(&std::fs::read_to_string(&file).unwrap()) {
            let Some(&layer) = layers.get(used.as_str()) else {
                continue;
            };
            if used != top && layer >= own {
                wrong.push(format!(
                    "{} ({top}, layer {own}) uses {used} (layer {layer})",
                    rel.display()
                ));
            }
        }
    }
    assert!(checked > 40, "read {checked} files");
    assert!(
        wrong.is_empty(),
        "uses that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn store_modules_use_only_the_helpers_below_them() {
    let layers: BTreeMap<&str, u8> = STORE_LAYERS.iter().copied().collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "mod" {
            continue;
        }
        let own = *layers
            .get(name.as_str())
            .unwrap_or_else(|| panic!("store/{name}.rs has no layer in STORE_LAYERS"));
        let source = std::fs::read_to_string(&path).unwrap();
        let mut used = names_after(&source, "super::");
        used.extend(names_after(&source, "crate::store::"));
        for used in used {
            let Some(&layer) = layers.get(used.as_str()) else {
                continue;
            };
            if used != name && layer >= own {
                wrong.push(format!(
                    "store/{name}.rs (layer {own}) uses {used} (layer {layer})"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "store uses that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

/// The reader itself: a use that points up is seen, in every form.
#[test]
fn the_reader_sees_every_form_of_use() {
    let seen = uses(
        "use crate::grpc::pb;\nuse crate::{sync, store::Store};\n// crate::cli in a comment\nlet x = crate::node::start();",
    );
    assert_eq!(seen, ["grpc", "sync", "store", "node"]);
}
