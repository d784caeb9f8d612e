//! Checks that generated documents under docs/ match the code; `SHADOWCOPY_BLESS=1` rewrites them.

use std::path::PathBuf;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Compares `path` (relative to the workspace root) with `expected`, or rewrites it when blessing.
fn check_generated(path: &str, expected: &str) {
    let full = workspace_root().join(path);
    if std::env::var_os("SHADOWCOPY_BLESS").is_some() {
        std::fs::write(&full, expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&full).unwrap_or_default();
    assert!(
        actual == expected,
        "{path} is out of date with the code; run `SHADOWCOPY_BLESS=1 cargo test -p shadowcopy-metadata --test generated_docs` and commit the result"
    );
}

#[test]
fn error_codes_doc_is_current() {
    check_generated(
        "docs/error-codes.md",
        &shadowcopy_metadata::codes::render_markdown(),
    );
}

/// The committed JSON Schemas under docs/schema/ match the document types.
#[test]
fn json_schemas_are_current() {
    for (path, text) in shadowcopy_metadata::json::schema_files() {
        check_generated(path, &text);
    }
}
