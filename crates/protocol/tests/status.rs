//! The conversions between the VSS result codes of the registry and the wire, for every code.

use prost::Message;
use shadowcopy_metadata::codes::{self, ErrorCode, REGISTRY};
use shadowcopy_protocol::{
    VSS_CODE_HEADER, error_code_of, error_code_of_grpc, grpc_code, grpc_status, status_ok,
    to_grpc_status, v1,
};
use tonic::Code;

#[test]
fn every_code_survives_status_and_the_wire() {
    for code in REGISTRY {
        let status = v1::Status::from(code);
        assert_eq!(status.code, code.value, "{code}");
        assert_eq!(status.name, code.name, "{code}");
        assert_eq!(status.message, code.meaning, "{code}");
        assert_eq!(status.hint, code.action, "{code}");
        assert_eq!(status.is_success(), code.is_success(), "{code}");
        assert_eq!(error_code_of(&status), Some(code), "{code}");
        assert_eq!(status.error_code(), Some(code), "{code}");

        let decoded = v1::Status::decode(status.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, status, "{code}");
        assert_eq!(error_code_of(&decoded), Some(code), "{code}");

        let specific = v1::Status::from_code(code, "volume /srv is busy");
        assert_eq!(specific.message, "volume /srv is busy");
        assert_eq!(specific.hint, code.action);
        assert_eq!(
            specific.to_string(),
            format!("{} (0x{:08X}): volume /srv is busy", code.name, code.value)
        );
    }
}

#[test]
fn the_number_decides_not_the_name() {
    let status = v1::Status {
        code: codes::VSS_E_BAD_STATE.value,
        name: "SOMETHING_ELSE".into(),
        message: String::new(),
        hint: String::new(),
    };
    assert_eq!(error_code_of(&status), Some(&codes::VSS_E_BAD_STATE));
    let bare = v1::Status {
        code: codes::VSS_E_BAD_STATE.value,
        ..Default::default()
    };
    assert_eq!(
        bare.to_string(),
        "VSS_E_BAD_STATE (0x80042301): wrong call sequence"
    );
}

#[test]
fn the_default_status_is_success() {
    assert_eq!(status_ok(), v1::Status::from(&codes::S_OK));
    assert!(status_ok().is_success());
    assert_eq!(error_code_of(&v1::Status::default()), Some(&codes::S_OK));
}

#[test]
fn every_failure_code_survives_a_grpc_status() {
    for code in REGISTRY.iter().filter(|code| !code.is_success()) {
        let grpc = grpc_status(code, "the detail");
        assert_eq!(grpc.code(), grpc_code(code), "{code}");
        assert_ne!(grpc.code(), Code::Ok, "{code}");
        assert_eq!(
            grpc.message(),
            format!("{} (0x{:08X}): the detail", code.name, code.value)
        );
        assert_eq!(
            grpc.metadata()
                .get_bin(VSS_CODE_HEADER)
                .expect("the code travels in metadata")
                .to_bytes()
                .expect("valid base64")
                .as_ref(),
            code.value.to_be_bytes()
        );
        assert_eq!(error_code_of_grpc(&grpc), Some(code), "{code}");
        assert_eq!(
            error_code_of_grpc(&to_grpc_status(&v1::Status::from(code))),
            Some(code)
        );
    }
    assert_eq!(error_code_of_grpc(&tonic::Status::internal("plain")), None);
}

#[test]
fn success_codes_map_to_ok() {
    for code in REGISTRY.iter().filter(|code| code.is_success()) {
        assert_eq!(grpc_code(code), Code::Ok, "{code}");
    }
}

#[test]
fn the_mapping_the_protocol_promises() {
    let expected: [(&ErrorCode, Code); 6] = [
        (&codes::E_ACCESSDENIED, Code::PermissionDenied),
        (&codes::E_INVALIDARG, Code::InvalidArgument),
        (&codes::VSS_E_BAD_STATE, Code::FailedPrecondition),
        (&codes::VSS_E_OBJECT_NOT_FOUND, Code::NotFound),
        (&codes::VSS_E_UNEXPECTED, Code::Internal),
        (&codes::VSS_E_SNAPSHOT_SET_IN_PROGRESS, Code::Aborted),
    ];
    for (code, grpc) in expected {
        assert_eq!(grpc_code(code), grpc, "{code}");
    }
}

/// The canonical upper-case name of a gRPC code, as docs/protocol.md writes it.
fn canonical_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[test]
fn docs_list_the_same_grpc_code_for_every_failure_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let text = std::fs::read_to_string(path).expect("docs/protocol.md exists");
    let rows: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("| `0x"))
        .collect();
    let failures: Vec<&ErrorCode> = REGISTRY.iter().filter(|code| !code.is_success()).collect();
    assert_eq!(
        rows.len(),
        failures.len(),
        "docs/protocol.md must have one mapping row per failure code"
    );
    for (row, code) in rows.iter().zip(failures) {
        let expected = format!(
            "| `0x{:08X}` | `{}` | {} |",
            code.value,
            code.name,
            canonical_name(grpc_code(code))
        );
        assert!(
            row.starts_with(&expected),
            "{row}\nshould start with\n{expected}"
        );
    }
}
