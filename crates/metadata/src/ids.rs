//! Identifiers (GUIDs) and the VSS timestamp (ENUM-1, ROLE-7, ROLE-10).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A GUID (`VSS_ID`, ENUM-1), written in JSON in its lowercase hyphenated form.
pub type Guid = uuid::Uuid;

/// Declares a typed GUID so that a writer class id can never be passed where a snapshot set id is meant.
macro_rules! typed_guid {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub Guid);

        impl $name {
            /// A new random id.
            pub fn new_random() -> Self {
                $name(Guid::new_v4())
            }

            /// The nil id (all zeros), which never names a real object.
            pub const fn nil() -> Self {
                $name(Guid::nil())
            }

            /// Whether this is the nil id.
            pub fn is_nil(&self) -> bool {
                self.0.is_nil()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Guid::parse_str(s.trim_matches(|c| c == '{' || c == '}')).map($name)
            }
        }
    };
}

typed_guid! {
    /// A writer class id: chosen by the writer's developer and shared by every instance (ROLE-7).
    WriterClassId
}

typed_guid! {
    /// A writer instance id: assigned by the coordinator each time a writer starts (ROLE-7).
    WriterInstanceId
}

typed_guid! {
    /// The id of a shadow copy set (ROLE-10).
    SnapshotSetId
}

typed_guid! {
    /// The id of one shadow copy of one volume (ROLE-10).
    SnapshotId
}

typed_guid! {
    /// The id of a provider (PROV-SEL-1).
    ProviderId
}

/// `VSS_TIMESTAMP` (ENUM-1): 100 ns ticks since 1601-01-01 UTC, as Windows FILETIME.
///
/// Zero means "not set" (DF-3 uses a zero last-modify time to say "work it out yourself").
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(transparent)]
pub struct VssTimestamp(pub i64);

impl VssTimestamp {
    /// Ticks between 1601-01-01 and the Unix epoch.
    const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

    /// The timestamp of a Unix time in nanoseconds.
    pub const fn from_unix_nanos(nanos: i128) -> Self {
        VssTimestamp((nanos / 100) as i64 + Self::UNIX_EPOCH_TICKS)
    }

    /// The Unix time in nanoseconds.
    pub const fn to_unix_nanos(self) -> i128 {
        (self.0 - Self::UNIX_EPOCH_TICKS) as i128 * 100
    }

    /// The current time.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self::from_unix_nanos(since_epoch.as_nanos() as i128)
    }

    /// Whether the timestamp is unset (zero).
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetime_epoch_matches_windows() {
        // 1970-01-01T00:00:00Z is 116444736000000000 in FILETIME.
        assert_eq!(VssTimestamp::from_unix_nanos(0).0, 116_444_736_000_000_000);
        let t = VssTimestamp::from_unix_nanos(1_700_000_000_123_456_700);
        assert_eq!(t.to_unix_nanos(), 1_700_000_000_123_456_700);
    }

    #[test]
    fn guids_parse_with_or_without_braces() {
        let a: WriterClassId = "{a65faa63-5ea8-4ebc-9dbd-a0c4db26912a}".parse().unwrap();
        let b: WriterClassId = "A65FAA63-5EA8-4EBC-9DBD-A0C4DB26912A".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a65faa63-5ea8-4ebc-9dbd-a0c4db26912a");
    }
}
