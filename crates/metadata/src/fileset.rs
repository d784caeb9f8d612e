//! File-set matching (WMD-11, WMD-12): which files a (path, filespec, recursive) triple names.
//!
//! This module decides membership from path strings only; walking a directory tree is the requester's job.

use crate::wmd::FileSet;

/// Whether two directory paths name the same directory; a trailing `/` is optional (WMD-11).
pub fn same_directory(a: &str, b: &str) -> bool {
    trim_trailing_separator(a) == trim_trailing_separator(b)
}

fn trim_trailing_separator(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() && path.starts_with('/') {
        "/"
    } else {
        trimmed
    }
}

/// Whether `name` matches a filespec with `*` (any run of characters) and `?` (one character).
///
/// `*.*` also matches names without a dot, as VSS filespecs do, so that a writer that wrote the
/// Windows idiom for "every file" gets every file.
pub fn filespec_matches(filespec: &str, name: &str) -> bool {
    if filespec == "*.*" {
        return true;
    }
    let pattern: Vec<char> = filespec.chars().collect();
    let text: Vec<char> = name.chars().collect();
    // Iterative wildcard matching with one backtrack point: linear in practice, no recursion.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

impl FileSet {
    /// Whether the file at absolute path `file` belongs to this set (WMD-12).
    ///
    /// A non-recursive set matches files directly in `path`; a recursive one also matches files in
    /// every directory below it. Environment variables in `path` must already be expanded.
    pub fn contains(&self, file: &str) -> bool {
        let dir = trim_trailing_separator(&self.path);
        let Some((parent, name)) = file.rsplit_once('/') else {
            return false;
        };
        let parent = if parent.is_empty() { "/" } else { parent };
        let in_scope = if self.recursive {
            parent == dir
                || (dir == "/" && parent.starts_with('/'))
                || parent
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
        } else {
            parent == dir
        };
        in_scope && filespec_matches(&self.filespec, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(path: &str, filespec: &str, recursive: bool) -> FileSet {
        FileSet {
            path: path.into(),
            filespec: filespec.into(),
            recursive,
        }
    }

    /// The worked case of WMD-12 (and TS-32) on the Directory1 tree.
    #[test]
    fn wmd_12_worked_case() {
        let tree = [
            "/Directory1/File1.txt",
            "/Directory1/File2.txt",
            "/Directory1/Directory2/File1.txt",
            "/Directory1/Directory2/File2.txt",
        ];
        let matching = |s: &FileSet| tree.iter().filter(|f| s.contains(f)).count();
        assert_eq!(matching(&set("/Directory1", "File1.*", true)), 2);
        assert_eq!(matching(&set("/Directory1", "*", true)), 4);
        assert_eq!(matching(&set("/Directory1/", "*", false)), 2);
    }

    #[test]
    fn wildcards() {
        assert!(filespec_matches("*.tmp", "a.tmp"));
        assert!(!filespec_matches("*.tmp", "a.tmpx"));
        assert!(filespec_matches("data?.db", "data1.db"));
        assert!(!filespec_matches("data?.db", "data10.db"));
        assert!(filespec_matches("*", ""));
        assert!(filespec_matches("*.*", "README"));
        assert!(filespec_matches("a*b*c", "aXXbYYc"));
        assert!(!filespec_matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn directories_compare_without_trailing_separator() {
        assert!(same_directory("/var/lib/db/", "/var/lib/db"));
        assert!(same_directory("/", "/"));
        assert!(!same_directory("/var/lib/db", "/var/lib/dbx"));
        assert!(!set("/var/lib/db", "*", true).contains("/var/lib/dbx/a"));
        assert!(set("/", "*", true).contains("/etc/passwd"));
    }
}

impl crate::wmd::WriterMetadata {
    /// Whether the writer's exclude list removes `file` from every backup (WMD-4, BK-COPY-3).
    ///
    /// Excludes are matched on the normal path, never on an alternate path (BK-COPY-2 step 5).
    pub fn excludes_file(&self, file: &str) -> bool {
        self.excludes.iter().any(|set| set.contains(file))
    }
}

#[cfg(test)]
mod exclude_tests {
    use crate::json::Document;
    use crate::wmd::{FileSet, WriterMetadata};

    /// TS-33 / WMD-4: a component with `*` recursive and a writer-wide exclude of `*.tmp`.
    #[test]
    fn excludes_win_over_components() {
        let mut wmd =
            WriterMetadata::from_json(include_str!("../tests/fixtures/full.wmd.json")).unwrap();
        wmd.excludes.push(FileSet {
            path: "/var/lib/postgresql/15/main".into(),
            filespec: "*.tmp".into(),
            recursive: true,
        });
        let component = &wmd.components[0].files[0].file_set();
        for file in [
            "/var/lib/postgresql/15/main/base/1/x.tmp",
            "/var/lib/postgresql/15/main/a.tmp",
        ] {
            assert!(component.contains(file));
            assert!(wmd.excludes_file(file), "{file}");
        }
        assert!(!wmd.excludes_file("/var/lib/postgresql/15/main/base/1/16384"));
        // postmaster.pid is excluded non-recursively, at the top only.
        assert!(wmd.excludes_file("/var/lib/postgresql/15/main/postmaster.pid"));
        assert!(!wmd.excludes_file("/var/lib/postgresql/15/main/sub/postmaster.pid"));
    }
}
