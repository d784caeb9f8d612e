//! Who may call what (spec §17, CFG-8): peers are identified by SO_PEERCRED on the Unix socket.
//!
//! Requester and admin calls are allowed to root, to members of the configured backup group and to
//! accounts granted the requester role; writer registrations to root, to the backup group and to
//! accounts granted the writer role (SEC-1, docs/protocol.md §1.1). An account set to `deny` is
//! refused everything, root included (SEC-2).

use nix::unistd::{Gid, Group, Uid, User};

use crate::config::{DaemonConfig, Role};

/// The credentials of the process on the other end of the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    /// User id.
    pub(crate) uid: u32,
    /// Primary group id.
    pub(crate) gid: u32,
    /// Process id, when the kernel reported one.
    pub(crate) pid: Option<i32>,
}

/// What a caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Requester or admin calls.
    Requester,
    /// Registering a writer.
    Writer,
}

/// Why a caller was refused: the text tells the administrator what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{who} may not {what}: {how}")]
pub(crate) struct Denied {
    who: String,
    what: &'static str,
    how: String,
}

fn account_name(uid: u32) -> String {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(
            || format!("uid {uid}"),
            |user| format!("user `{}` (uid {uid})", user.name),
        )
}

/// Whether `uid` (with primary group `gid`) belongs to the group called `group`.
fn in_group(uid: u32, gid: u32, group: &str) -> bool {
    let Ok(Some(group)) = Group::from_name(group) else {
        return false;
    };
    if group.gid == Gid::from_raw(gid) {
        return true;
    }
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    group.mem.contains(&user.name)
}

/// Decides whether `peer` may perform `action` under `config`.
pub(crate) fn check(config: &DaemonConfig, peer: Peer, action: Action) -> Result<(), Denied> {
    let name = User::from_uid(Uid::from_raw(peer.uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    let role = name
        .as_ref()
        .and_then(|n| config.access_control.get(n))
        .copied();
    let denied = |what: &'static str, how: String| Denied {
        who: account_name(peer.uid),
        what,
        how,
    };
    let what = match action {
        Action::Writer => "register a writer",
        Action::Requester => "run requester or admin calls",
    };
    // SEC-2: a deny wins over everything else, root and group membership included.
    if role == Some(Role::Deny) {
        return Err(denied(
            what,
            "access_control sets this account to \"deny\" in shadowcopyd.toml".into(),
        ));
    }
    if peer.uid == 0 {
        return Ok(());
    }
    let (granted, role_name) = match action {
        Action::Writer => (matches!(role, Some(Role::Writer | Role::Both)), "writer"),
        Action::Requester => (
            matches!(role, Some(Role::Requester | Role::Both)),
            "requester",
        ),
    };
    if granted {
        return Ok(());
    }
    if let Some(group) = &config.service.backup_group
        && in_group(peer.uid, peer.gid, group)
    {
        return Ok(());
    }
    let user = name.as_deref().unwrap_or("<user>");
    let how = match &config.service.backup_group {
        Some(group) => format!(
            "only root, members of the backup group `{group}` and accounts given the {role_name} role in [access_control] may; add the account to `{group}`, or set access_control.\"{user}\" = \"{role_name}\" in shadowcopyd.toml"
        ),
        None => format!(
            "only root and accounts given the {role_name} role may; set service.backup_group, or access_control.\"{user}\" = \"{role_name}\", in shadowcopyd.toml"
        ),
    };
    Err(denied(what, how))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32) -> Peer {
        Peer {
            uid,
            gid: uid,
            pid: None,
        }
    }

    #[test]
    fn root_may_do_everything_unless_denied() {
        let mut config = DaemonConfig::default();
        assert!(check(&config, peer(0), Action::Requester).is_ok());
        assert!(check(&config, peer(0), Action::Writer).is_ok());
        // SEC-2: a deny blocks even an account that would otherwise be allowed.
        config.access_control.insert("root".into(), Role::Deny);
        let err = check(&config, peer(0), Action::Requester).unwrap_err();
        assert!(err.to_string().contains("deny"), "{err}");
        assert!(check(&config, peer(0), Action::Writer).is_err());
    }

    #[test]
    fn others_need_the_backup_group_or_a_role() {
        let mut config = DaemonConfig::default();
        // `nobody` exists on Debian with uid 65534 and is in no group but `nogroup`.
        let nobody = peer(65534);
        let err = check(&config, nobody, Action::Requester).unwrap_err();
        assert!(err.to_string().contains("backup_group"), "{err}");
        let err = check(&config, nobody, Action::Writer).unwrap_err();
        assert!(err.to_string().contains("writer role"), "{err}");
        config.service.backup_group = Some("nogroup".into());
        assert!(
            check(
                &config,
                Peer {
                    uid: 65534,
                    gid: 65534,
                    pid: None
                },
                Action::Requester
            )
            .is_ok()
        );
        config.service.backup_group = None;
        config
            .access_control
            .insert("nobody".into(), Role::Requester);
        assert!(check(&config, nobody, Action::Requester).is_ok());
        assert!(check(&config, nobody, Action::Writer).is_err());
        config.access_control.insert("nobody".into(), Role::Writer);
        assert!(check(&config, nobody, Action::Writer).is_ok());
        assert!(check(&config, nobody, Action::Requester).is_err());
        config.access_control.insert("nobody".into(), Role::Both);
        assert!(check(&config, nobody, Action::Writer).is_ok());
        assert!(check(&config, nobody, Action::Requester).is_ok());
        // A deny wins over group membership (SEC-2).
        config.service.backup_group = Some("nogroup".into());
        config.access_control.insert("nobody".into(), Role::Deny);
        assert!(check(&config, nobody, Action::Writer).is_err());
        assert!(check(&config, nobody, Action::Requester).is_err());
    }
}
