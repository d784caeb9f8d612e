//! The built-in writers of shadowcopy (spec §5, ROLE-2): each describes an application's data as
//! components and quiesces it for the freeze window, hosted inside `shadowcopyd` or run on its own
//! through the writer SDK (`shadowcopy-writer`).
//!
//! Every writer is declared by one TOML file, normally in `/etc/shadowcopy/writers.d/`
//! ([`declaration`]); its `kind` picks the module that implements it.
pub mod cgroup;

pub mod declaration;
pub mod hooks;
pub mod mariadb;
mod marker;
pub mod postgres;
pub mod script;
pub mod sqlite;
