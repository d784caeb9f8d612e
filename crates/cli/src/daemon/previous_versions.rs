//! `shadowcopy previous-versions smb-conf`: the smb.conf share sections that show the
//! client-accessible shadow copies of the `[[previous_versions]]` shares to SMB clients, read from
//! the daemon's configuration file (docs/previous-versions.md). Offline: no daemon is asked.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;
use shadowcopy_daemon::config::PreviousVersionsShare;
use shadowcopy_daemon::{DEFAULT_CONFIG, DaemonConfig};

use crate::output::Output;

/// `shadowcopy previous-versions ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum PreviousVersionsCommand {
    /// Print the smb.conf share section for a `[[previous_versions]]` share of shadowcopyd.toml.
    ///
    /// shadowcopyd keeps, for each `[[previous_versions]]` entry (a shared directory `path`, and
    /// `snapdir`, where the views go), one read-only view per client-accessible shadow copy
    /// (`shadowcopy create --client-accessible --volume VOLUME`) named
    /// `@GMT-YYYY.MM.DD-HH.MM.SS` after its creation time in UTC. The printed section points
    /// Samba's vfs_shadow_copy2 at them, so that Windows users see the copies as Previous
    /// Versions. Paste it into /etc/samba/smb.conf (samba and samba-vfs-modules installed) and
    /// reload smbd. Without PATH, prints one section for every entry.
    SmbConf {
        /// The shared directory, as an entry's `path` names it.
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
        /// The share's name in smb.conf; the last component of its path by default.
        #[arg(long, value_name = "NAME", requires = "path")]
        name: Option<String>,
        /// The daemon's configuration file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// The default share name: the directory's last component.
fn default_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "share".to_owned(), |n| n.to_string_lossy().into_owned())
}

pub(super) fn run(command: PreviousVersionsCommand, out: &Output) -> anyhow::Result<()> {
    let PreviousVersionsCommand::SmbConf { path, name, config } = command;
    let daemon = DaemonConfig::load(&config)?;
    let shares: Vec<&PreviousVersionsShare> = match &path {
        Some(path) => {
            let wanted = path.components().collect::<PathBuf>();
            match daemon.previous_versions.iter().find(|s| s.path == wanted) {
                Some(share) => vec![share],
                None => bail!(
                    "{} has no [[previous_versions]] entry for {}{}; add one \
                     (`[[previous_versions]]` with `path = \"{}\"`), restart shadowcopyd, and \
                     run this again",
                    config.display(),
                    path.display(),
                    configured(&daemon),
                    path.display()
                ),
            }
        }
        None => {
            if daemon.previous_versions.is_empty() {
                bail!(
                    "{} has no [[previous_versions]] entries: add one per shared directory \
                     (`[[previous_versions]]` with `path = \"/srv/share\"`), restart shadowcopyd, \
                     and run this again",
                    config.display()
                );
            }
            daemon.previous_versions.iter().collect()
        }
    };
    let sections: Vec<(String, &PreviousVersionsShare, String)> = shares
        .into_iter()
        .map(|share| {
            let name = name.clone().unwrap_or_else(|| default_name(&share.path));
            let text = share.smb_conf(&name, &daemon.providers);
            (name, share, text)
        })
        .collect();
    let value = json!(
        sections
            .iter()
            .map(|(name, share, text)| json!({
                "name": name,
                "path": share.path,
                "snapdir": share.snapdir(),
                "smb_conf": text,
            }))
            .collect::<Vec<_>>()
    );
    out.print(&value, || {
        sections
            .iter()
            .map(|(_, _, text)| text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// ", which has entries for A, B" or "" when it has none.
fn configured(config: &DaemonConfig) -> String {
    if config.previous_versions.is_empty() {
        return String::new();
    }
    let paths: Vec<String> = config
        .previous_versions
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    format!(" (it has entries for {})", paths.join(", "))
}
