//! `src/raft` is pure (STYLE practice 1): no async runtime, no file system, no network, no
//! clock, no global random generator. This test reads the module's sources and fails on any
//! mention of them outside comments.

use std::path::Path;

/// Forbidden in code (matched as substrings of non-comment lines).
const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::fs",
    "std::net",
    "std::time",
    "Instant",
    "SystemTime",
    "thread_rng",
    "rand::",
    "std::thread",
    "std::process",
    "std::env",
    "getrandom",
];

fn sources(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/raft is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn raft_core_does_no_io_and_reads_no_clock() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/raft"),
        &mut files,
    );
    assert!(
        files.len() > 5,
        "expected the raft sources, found {files:?}"
    );
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source is readable");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in FORBIDDEN.iter().filter(|word| code.contains(*word)) {
                violations.push(format!("{}:{}: {word}: {line}", file.display(), number + 1));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "src/raft must stay pure:\n{}",
        violations.join("\n")
    );
}
