//! `pickline staff add`: adds a `[[web.staff]]` entry (name, store, argon2 hash of the
//! password) to a config file.
//!
//! The password is read from `PICKLINE_STAFF_PASSWORD` or, without it, from the first
//! line of standard input, never from a flag (flags are visible in `ps`). The file is
//! changed only if the result still loads and validates as a whole, and atomically
//! (written beside it, then renamed over it).

use std::{io::BufRead as _, path::PathBuf};

use anyhow::{Context as _, bail};

use crate::config::Config;

/// Least password length accepted.
pub const PASSWORD_LEN_MIN: usize = 8;

/// `pickline staff ...`
#[derive(Debug, clap::Subcommand)]
pub enum StaffCommand {
    /// Add a staff member who may sign in to the tablet pages of one store. The password
    /// comes from PICKLINE_STAFF_PASSWORD or the first line of standard input.
    Add {
        /// The config file to add the entry to (created if missing).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Sign-in name (recorded with every action).
        #[arg(long)]
        name: String,
        /// The store (external id) whose orders this member works.
        #[arg(long)]
        store: String,
    },
}

/// Runs the command.
pub fn run(cmd: &StaffCommand) -> anyhow::Result<()> {
    let StaffCommand::Add {
        config,
        name,
        store,
    } = cmd;
    let password = match std::env::var("PICKLINE_STAFF_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            eprintln!("password for {name} (one line on standard input):");
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config.display())),
    };
    let updated = add(&text, config, name, store, &password)?;
    let tmp = config.with_extension("toml.tmp");
    std::fs::write(&tmp, updated).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, config).with_context(|| format!("replacing {}", config.display()))?;
    println!(
        "added staff member {name} of store {store} to {}",
        config.display()
    );
    Ok(())
}

/// `text` with a `[[web.staff]]` entry for `name` appended, checked as a whole config.
pub fn add(
    text: &str,
    path: &std::path::Path,
    name: &str,
    store: &str,
    password: &str,
) -> anyhow::Result<String> {
    if password.chars().count() < PASSWORD_LEN_MIN {
        bail!("the password must have at least {PASSWORD_LEN_MIN} characters");
    }
    let before = Config::from_toml(text, path).context("the config file does not load")?;
    if before.web.staff.iter().any(|s| s.name == name) {
        bail!(
            "{} already has a staff member named {name:?}",
            path.display()
        );
    }
    let hash = super::auth::hash_password(password).map_err(anyhow::Error::msg)?;
    let mut entry = toml::Table::new();
    entry.insert("name".into(), name.into());
    entry.insert("store".into(), store.into());
    entry.insert("password_hash".into(), hash.into());
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("\n[[web.staff]]\n");
    out.push_str(&toml::to_string(&entry)?);
    let after = Config::from_toml(&out, path).context("the entry would not load")?;
    after
        .validate()
        .map_err(|e| anyhow::anyhow!("the entry would not validate: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_loadable_entry_and_refuses_duplicates_and_short_passwords() {
        let path = std::path::Path::new("p.toml");
        let text = add(
            "[grpc]\nconcurrency_limit = 10\n",
            path,
            "alice",
            "S1",
            "correct horse",
        )
        .unwrap();
        let config = Config::from_toml(&text, path).unwrap();
        assert_eq!(config.grpc.concurrency_limit, 10);
        let staff = &config.web.staff[0];
        assert_eq!((staff.name.as_str(), staff.store.as_str()), ("alice", "S1"));
        assert!(super::super::auth::verify_password(
            &staff.password_hash,
            "correct horse"
        ));
        assert!(add(&text, path, "alice", "S2", "another pass").is_err());
        let two = add(&text, path, "bob", "S2", "another pass").unwrap();
        assert_eq!(Config::from_toml(&two, path).unwrap().web.staff.len(), 2);
        assert!(add("", path, "carol", "S1", "short").is_err());
    }
}
