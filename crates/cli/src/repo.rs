//! Opening the backup repository as restic users expect: `--repo` or `RESTIC_REPOSITORY`, the
//! password from `RESTIC_PASSWORD`, `RESTIC_PASSWORD_FILE`, or a prompt on the terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use shadowcopy_repository::{Password, Repository, RepositoryError};

/// Which repository.
#[derive(Debug, Clone, Args)]
pub(crate) struct RepoArgs {
    /// The restic repository (a local directory). A missing or empty directory is initialised
    /// (format v2). The password comes from RESTIC_PASSWORD, RESTIC_PASSWORD_FILE, or a prompt.
    #[arg(long, short = 'r', env = "RESTIC_REPOSITORY", value_name = "DIR")]
    pub(crate) repo: PathBuf,
}

impl RepoArgs {
    /// Opens the repository, initialising a new one; asks for the password on the terminal when
    /// the environment gives none.
    pub(crate) fn open(&self) -> anyhow::Result<Arc<Repository>> {
        let password = match Password::from_env() {
            Ok(password) => password,
            Err(RepositoryError::PasswordMissing) if std::io::stdin().is_terminal() => {
                prompt(&self.repo)?
            }
            Err(error) => return Err(error.into()),
        };
        Ok(Arc::new(Repository::open_or_init(&self.repo, password)?))
    }
}

/// Asks for the password; twice for a repository that does not exist yet, so that a typo does not
/// lock the backups away.
fn prompt(repo: &Path) -> anyhow::Result<Password> {
    let fresh = std::fs::read_dir(repo).map_or(true, |mut entries| entries.next().is_none());
    let first =
        rpassword::prompt_password(format!("password for repository {}: ", repo.display()))?;
    if fresh {
        let again = rpassword::prompt_password("enter the new repository's password again: ")?;
        if again != first {
            anyhow::bail!("the two passwords differ; nothing was created");
        }
    }
    if first.is_empty() {
        anyhow::bail!("an empty password is not accepted; set RESTIC_PASSWORD or type one");
    }
    Ok(Password::new(first))
}
