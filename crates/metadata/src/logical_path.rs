//! Logical paths of components (LP-1, LP-2): `\`-separated names that place components in sets.
//!
//! A logical path is not a filesystem path. Its separator stays `\` on Linux (LP-1), and it never
//! touches the disk. A component's *full path* is its logical path, then `\`, then its name; a
//! component belongs to the set of a selectable component S when its logical path equals S's full
//! path or starts with it followed by `\` (LP-2).

/// The separator of logical path segments (LP-1).
pub const SEPARATOR: char = '\\';

/// The full path of a component: `logical_path\name`, or just `name` at the top level (LP-2).
pub fn full_path(logical_path: &str, name: &str) -> String {
    if logical_path.is_empty() {
        name.to_owned()
    } else {
        format!("{logical_path}{SEPARATOR}{name}")
    }
}

/// Whether a component whose logical path is `logical_path` lies inside the set defined by the
/// component whose full path is `set_full_path` (LP-2).
pub fn is_in_set(logical_path: &str, set_full_path: &str) -> bool {
    logical_path == set_full_path
        || logical_path
            .strip_prefix(set_full_path)
            .is_some_and(|rest| rest.starts_with(SEPARATOR))
}

/// Whether a logical path names a component on another host (`\\host\...`, DEP-2).
pub fn is_remote(logical_path: &str) -> bool {
    logical_path.starts_with("\\\\")
}

/// The host of a remote logical path (`\\host\rest` gives `host`), if it is remote (DEP-2).
pub fn remote_host(logical_path: &str) -> Option<&str> {
    let rest = logical_path.strip_prefix("\\\\")?;
    Some(rest.split(SEPARATOR).next().unwrap_or(rest))
}

/// Why a logical path or component name is malformed, if it is.
///
/// The empty logical path is the top level and is valid. Otherwise segments must be non-empty, so a
/// leading, trailing or doubled `\` is refused; a remote dependency target may start with `\\`
/// when `allow_remote` is set. NUL and other control characters are refused everywhere.
pub fn check_logical_path(logical_path: &str, allow_remote: bool) -> Result<(), String> {
    if logical_path.is_empty() {
        return Ok(());
    }
    check_text(logical_path)?;
    let local = match logical_path.strip_prefix("\\\\") {
        Some(rest) if allow_remote => rest,
        Some(_) => return Err("a remote `\\\\host\\` path is only allowed in dependencies".into()),
        None => logical_path,
    };
    if local.split(SEPARATOR).any(str::is_empty) {
        return Err("a segment is empty (leading, trailing or doubled `\\`)".into());
    }
    Ok(())
}

/// Why a component name is malformed, if it is: names are non-empty and contain no `\` (LP-2).
pub fn check_component_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    check_text(name)?;
    if name.contains(SEPARATOR) {
        return Err(
            "a component name must not contain `\\`; put the parents in the logical path".into(),
        );
    }
    Ok(())
}

/// Refuses NUL and other control characters, which no document string may carry.
pub(crate) fn check_text(text: &str) -> Result<(), String> {
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("contains the control character U+{:04X}", c as u32)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_paths_and_sets() {
        assert_eq!(full_path("", "writerData"), "writerData");
        assert_eq!(
            full_path("writerData\\Set1", "Jan"),
            "writerData\\Set1\\Jan"
        );
        assert!(is_in_set("writerData", "writerData"));
        assert!(is_in_set("writerData\\QueryLogs", "writerData"));
        assert!(!is_in_set("writerDataX", "writerData"));
        assert!(!is_in_set("", "writerData"));
    }

    #[test]
    fn malformed_paths_are_refused() {
        assert!(check_logical_path("a\\\\b", false).is_err());
        assert!(check_logical_path("\\a", false).is_err());
        assert!(check_logical_path("a\\", false).is_err());
        assert!(check_logical_path("a\0b", false).is_err());
        assert!(check_logical_path("\\\\host\\db", true).is_ok());
        assert!(check_logical_path("\\\\host\\db", false).is_err());
        assert!(check_component_name("a\\b").is_err());
        assert_eq!(remote_host("\\\\db1\\Connections"), Some("db1"));
    }
}
