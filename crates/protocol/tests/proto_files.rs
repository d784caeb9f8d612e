//! Checks on the `.proto` files themselves: the rules of docs/protocol.md that the compiler does not enforce.
//!
//! Every service, method, message, field and oneof has a comment that says since when it exists,
//! field names are snake_case, and there are no proto enums: enumerations travel as their VSS
//! numbers (spec §2).

use std::collections::HashMap;
use std::path::Path;

const FILES: &[&str] = &[
    "shadowcopy/v1/common.proto",
    "shadowcopy/v1/requester.proto",
    "shadowcopy/v1/writer.proto",
    "shadowcopy/v1/admin.proto",
    "shadowcopy/v1/provider.proto",
];

// Field numbers of descriptor.proto, for the paths of SourceCodeInfo.
const FILE_MESSAGE_TYPE: i32 = 4;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED_TYPE: i32 = 3;
const MESSAGE_ONEOF_DECL: i32 = 8;
const SERVICE_METHOD: i32 = 2;

/// Every missing or bad comment, as `file: element`.
fn check_comment(
    problems: &mut Vec<String>,
    comments: &HashMap<Vec<i32>, String>,
    file: &str,
    path: &[i32],
    what: &str,
) {
    match comments.get(path) {
        None => problems.push(format!("{file}: {what} has no comment")),
        Some(text) if !text.contains("Since v1.0") => {
            problems.push(format!("{file}: {what} does not say \"Since v1.0\""))
        }
        Some(_) => {}
    }
}

fn is_snake_case(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
}

#[test]
fn every_element_is_commented_and_dated() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let files: Vec<_> = FILES.iter().map(|file| include.join(file)).collect();
    let set = protox::compile(&files, [&include]).expect("the protocol compiles");
    let mut problems = Vec::new();
    let mut seen = 0;
    for file in set.file.iter().filter(|file| FILES.contains(&file.name())) {
        seen += 1;
        let name = file.name();
        assert_eq!(file.package(), "shadowcopy.v1", "{name}");
        let comments: HashMap<Vec<i32>, String> = file
            .source_code_info
            .as_ref()
            .expect("protox keeps source info")
            .location
            .iter()
            .filter_map(|location| {
                let text = location.leading_comments.clone().unwrap_or_default();
                (!text.trim().is_empty()).then(|| (location.path.clone(), text))
            })
            .collect();
        if !file.enum_type.is_empty() {
            problems.push(format!(
                "{name}: declares proto enums; use VSS numbers instead"
            ));
        }
        for (s, service) in file.service.iter().enumerate() {
            let path = vec![FILE_SERVICE, s as i32];
            check_comment(
                &mut problems,
                &comments,
                name,
                &path,
                &format!("service {}", service.name()),
            );
            for (m, method) in service.method.iter().enumerate() {
                let mut path = path.clone();
                path.extend([SERVICE_METHOD, m as i32]);
                let what = format!("rpc {}.{}", service.name(), method.name());
                check_comment(&mut problems, &comments, name, &path, &what);
            }
            assert!(
                service.method.iter().any(|method| method.name() == "Hello"),
                "service {} must have Hello",
                service.name()
            );
        }
        for (m, message) in file.message_type.iter().enumerate() {
            let path = vec![FILE_MESSAGE_TYPE, m as i32];
            if !message.nested_type.is_empty() || !message.enum_type.is_empty() {
                problems.push(format!("{name}: message {} nests types", message.name()));
            }
            let _ = MESSAGE_NESTED_TYPE;
            check_comment(
                &mut problems,
                &comments,
                name,
                &path,
                &format!("message {}", message.name()),
            );
            let mut synthetic = Vec::new();
            for (f, field) in message.field.iter().enumerate() {
                let mut field_path = path.clone();
                field_path.extend([MESSAGE_FIELD, f as i32]);
                let what = format!("field {}.{}", message.name(), field.name());
                check_comment(&mut problems, &comments, name, &field_path, &what);
                if !is_snake_case(field.name()) {
                    problems.push(format!("{name}: {what} is not snake_case"));
                }
                if field.proto3_optional() {
                    synthetic.push(field.oneof_index());
                }
            }
            for (o, oneof) in message.oneof_decl.iter().enumerate() {
                if synthetic.contains(&(o as i32)) {
                    continue;
                }
                let mut oneof_path = path.clone();
                oneof_path.extend([MESSAGE_ONEOF_DECL, o as i32]);
                let what = format!("oneof {}.{}", message.name(), oneof.name());
                check_comment(&mut problems, &comments, name, &oneof_path, &what);
            }
        }
    }
    assert_eq!(seen, FILES.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
