//! [`WriterOptions`]: where the coordinator listens and the registration parameters of ROLE-8.

use std::path::PathBuf;
use std::time::Duration;

use shadowcopy_metadata::enums::{ApplicationLevel, SubscribeMask};

/// The freeze timeout VSS uses when a writer states none: 60 s (ROLE-8, BK-SNAP-5).
pub const DEFAULT_FREEZE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a writer connects and registers (ROLE-7, ROLE-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// The coordinator's Unix socket; [`shadowcopy_protocol::DEFAULT_SOCKET`] by default.
    pub socket: PathBuf,
    /// The order in which Freeze reaches the writer: front-end first, then back-end, then system
    /// (ROLE-9). FRONT_END by default.
    pub application_level: ApplicationLevel,
    /// The longest time the writer tolerates between Freeze and Thaw (BK-SNAP-5); 60 s by default.
    /// The coordinator sizes the freeze window with it, and the SDK's own timer aborts the writer
    /// when it runs out. Values below 1 ms count as 1 ms, because 0 on the wire means "default".
    pub freeze_timeout: Duration,
    /// Which events the writer wants; backup plus restore events by default (ROLE-8).
    pub subscribe_mask: SubscribeMask,
    /// The persistent instance name (ROLE-7), needed when several instances of one writer class
    /// run on the host and need restore events. When set it is written into the WMD's identity; a
    /// WMD that names another instance name is refused.
    pub instance_name: Option<String>,
    /// Whether to reconnect and register again, with a growing delay, when the coordinator goes
    /// away or cannot be reached; otherwise [`run`](crate::run) returns
    /// [`SdkError::CoordinatorGone`](crate::SdkError::CoordinatorGone). In both cases the writer
    /// is aborted (thawed) first. A refusal (wrong protocol version, invalid WMD) never retries.
    pub reconnect: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            socket: PathBuf::from(shadowcopy_protocol::DEFAULT_SOCKET),
            application_level: ApplicationLevel::FrontEnd,
            freeze_timeout: DEFAULT_FREEZE_TIMEOUT,
            subscribe_mask: SubscribeMask::DEFAULT,
            instance_name: None,
            reconnect: false,
        }
    }
}

impl WriterOptions {
    /// The default options with another socket.
    pub fn with_socket(socket: impl Into<PathBuf>) -> Self {
        WriterOptions {
            socket: socket.into(),
            ..WriterOptions::default()
        }
    }

    /// The freeze timeout as it goes on the wire: whole milliseconds, at least 1, at most
    /// `u32::MAX`.
    pub(crate) fn freeze_timeout_ms(&self) -> u32 {
        u32::try_from(self.freeze_timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// The freeze timeout the SDK's timer uses: the wire value, so that both sides agree.
    pub(crate) fn effective_freeze_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.freeze_timeout_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_role8() {
        let options = WriterOptions::default();
        assert_eq!(
            options.socket,
            PathBuf::from("/run/shadowcopy/shadowcopyd.sock")
        );
        assert_eq!(options.application_level, ApplicationLevel::FrontEnd);
        assert_eq!(options.freeze_timeout_ms(), 60_000);
        assert_eq!(options.subscribe_mask.bits(), 0x6);
        assert!(!options.reconnect);
    }

    #[test]
    fn freeze_timeout_never_goes_out_as_zero() {
        let options = WriterOptions {
            freeze_timeout: Duration::ZERO,
            ..WriterOptions::default()
        };
        assert_eq!(options.freeze_timeout_ms(), 1);
        assert_eq!(options.effective_freeze_timeout(), Duration::from_millis(1));
    }
}
