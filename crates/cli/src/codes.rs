//! `shadowcopy codes`: explains VSS result codes from the registry.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use shadowcopy_metadata::codes::{self, ErrorCode};

use crate::output::Output;

/// Arguments of `shadowcopy codes`.
#[derive(Debug, Args)]
pub(crate) struct CodesArgs {
    /// A code by number (`0x80042316`, `2147754774`) or by name (`VSS_E_SNAPSHOT_SET_IN_PROGRESS`).
    code: Option<String>,
}

fn find(text: &str) -> Option<&'static ErrorCode> {
    let number = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse::<u32>().ok(),
    };
    match number {
        Some(value) => codes::lookup(value),
        None => codes::by_name(text),
    }
}

fn to_json(code: &ErrorCode) -> serde_json::Value {
    json!({
        "value": code.value,
        "hex": format!("{:#010X}", code.value),
        "name": code.name,
        "title": code.title,
        "meaning": code.meaning,
        "action": code.action,
        "spec": code.spec,
    })
}

pub(crate) fn run(args: CodesArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let Some(text) = args.code else {
        let all: Vec<_> = codes::REGISTRY.iter().map(to_json).collect();
        out.print(&json!(all), || {
            codes::REGISTRY
                .iter()
                .map(|c| format!("{:#010X}  {:<46} {}\n", c.value, c.name, c.title))
                .collect()
        });
        return Ok(ExitCode::SUCCESS);
    };
    let code = find(text.trim()).ok_or_else(|| {
        anyhow::anyhow!(
            "`{text}` is not a known VSS result code; `shadowcopy codes` lists them all"
        )
    })?;
    out.print(&to_json(code), || {
        format!(
            "{} ({:#010X}): {}\n\nMeaning: {}\nWhat to do: {}\nSpec: {}\n",
            code.name, code.value, code.title, code.meaning, code.action, code.spec
        )
    });
    Ok(ExitCode::SUCCESS)
}
