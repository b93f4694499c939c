//! [`Policy`]: which authenticated identity may do what under which lock names, from the
//! policy file (`fenced --policy FILE`, which needs authentication on).
//!
//! The file holds one rule a line, `IDENTITY PERMISSION PATTERN`; `#` starts a comment:
//! - IDENTITY: a name the authentication gives (a tokens file's first column), or `*`
//!   for every authenticated identity;
//! - PERMISSION: `lock` (acquire, and renew and release the leases it holds: Acquire,
//!   Renew, KeepAlive, Release and the same in a Session), `read` (Describe, List, Watch,
//!   CheckToken) or `admin` (the ClusterService's membership changes, which need `admin`
//!   on `*`);
//! - PATTERN: a lock name (that lock only), a prefix followed by `*` (`orders/*`: every lock
//!   whose name starts with `orders/`), or `*` alone (every lock).
//!
//! Whatever no rule grants is denied. Permissions are separate: `lock` does not imply
//! `read`. A file of [`MAX_POLICY_BYTES`] bytes and [`MAX_RULES`] rules at most is read
//! once, at start.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::auth::MAX_IDENTITY_BYTES;

/// The largest policy file, in bytes.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;
/// The most rules a policy file may hold.
pub const MAX_RULES: usize = 10_000;
/// The longest pattern, in bytes (a lock name's ceiling and its `*`).
pub const MAX_PATTERN_BYTES: usize = fenced_types::LockName::MAX_BYTES + 1;

/// What a rule lets an identity do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Acquire locks; renew and release the leases that hold them.
    Lock,
    /// Describe, List, Watch, CheckToken.
    Read,
    /// Administer: the cluster's membership.
    Admin,
}

impl Permission {
    /// The permission's name, as the policy file and refusals spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Lock => "lock",
            Permission::Read => "read",
            Permission::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Permission> {
        match text {
            "lock" => Some(Permission::Lock),
            "read" => Some(Permission::Read),
            "admin" => Some(Permission::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which lock names a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this name.
    Exact(Box<str>),
    /// Every name that starts with this (empty: every name).
    Prefix(Box<str>),
}

impl Pattern {
    /// Whether the rule covers lock `name`.
    fn covers(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => **exact == *name,
            Pattern::Prefix(prefix) => name.starts_with(&**prefix),
        }
    }

    /// Whether the rule covers some name that starts with `prefix`.
    fn meets_prefix(&self, prefix: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact.starts_with(prefix),
            Pattern::Prefix(own) => own.starts_with(prefix) || prefix.starts_with(&**own),
        }
    }
}

/// One rule: a permission on the names a pattern covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    permission: Permission,
    pattern: Pattern,
}

/// Why a policy file cannot be used, with the line that says so.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// The file cannot be read.
    #[error("cannot read the policy file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_POLICY_BYTES`].
    #[error("the policy file {} is over {MAX_POLICY_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A line is not a rule.
    #[error("policy file {}, line {line}: {problem}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
}

/// The rules of a policy file, by identity. See the module documentation.
#[derive(Debug, Default)]
pub struct Policy {
    /// The rules of each named identity.
    by_identity: HashMap<Arc<str>, Vec<Rule>>,
    /// The rules of `*`, for every identity.
    everyone: Vec<Rule>,
}

impl Policy {
    /// Reads a policy file, refusing any line it cannot use.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyFileError> {
        let read = |source| PolicyFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut text = String::new();
        file.take(MAX_POLICY_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyFileError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Policy::parse(&text).map_err(|(line, problem)| PolicyFileError::Line {
            path: path.to_path_buf(),
            line,
            problem,
        })
    }

    /// Parses a policy file's text; an error is the line number and the problem.
    pub fn parse(text: &str) -> Result<Policy, (usize, String)> {
        let mut policy = Policy::default();
        let mut rules = 0usize;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(identity), Some(permission), Some(pattern), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err((number, "expected IDENTITY PERMISSION PATTERN".to_string()));
            };
            if identity.len() > MAX_IDENTITY_BYTES || identity.chars().any(char::is_control) {
                return Err((
                    number,
                    format!("the identity must be at most {MAX_IDENTITY_BYTES} printable bytes"),
                ));
            }
            let permission = Permission::parse(permission).ok_or_else(|| {
                (
                    number,
                    format!("unknown permission {permission:?}: expected lock, read or admin"),
                )
            })?;
            let pattern = parse_pattern(pattern).map_err(|problem| (number, problem))?;
            if rules == MAX_RULES {
                return Err((number, format!("more than {MAX_RULES} rules")));
            }
            rules += 1;
            let rule = Rule {
                permission,
                pattern,
            };
            if identity == "*" {
                policy.everyone.push(rule);
            } else {
                policy
                    .by_identity
                    .entry(Arc::from(identity))
                    .or_default()
                    .push(rule);
            }
        }
        Ok(policy)
    }

    /// The rules that apply to `identity`: its own and those of `*`.
    fn rules<'a>(&'a self, identity: &str) -> impl Iterator<Item = &'a Rule> {
        self.by_identity
            .get(identity)
            .into_iter()
            .flatten()
            .chain(&self.everyone)
    }

    /// Whether `identity` has `permission` on lock `name`.
    pub fn allows(&self, identity: &str, permission: Permission, name: &str) -> bool {
        self.rules(identity)
            .any(|rule| rule.permission == permission && rule.pattern.covers(name))
    }

    /// Whether `identity` has `permission` on some lock whose name starts with `prefix`.
    pub fn allows_some_under(&self, identity: &str, permission: Permission, prefix: &str) -> bool {
        self.rules(identity)
            .any(|rule| rule.permission == permission && rule.pattern.meets_prefix(prefix))
    }

    /// Whether `identity` has `permission` on every lock (a rule with the pattern `*`).
    pub fn allows_all(&self, identity: &str, permission: Permission) -> bool {
        self.rules(identity).any(|rule| {
            rule.permission == permission && rule.pattern == Pattern::Prefix(Box::from(""))
        })
    }
}

/// Parses a rule's pattern: `NAME`, `PREFIX*` or `*`.
fn parse_pattern(text: &str) -> Result<Pattern, String> {
    if text.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "the pattern is over {MAX_PATTERN_BYTES} bytes long"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("the pattern contains a control character".to_string());
    }
    match text.strip_suffix('*') {
        Some(prefix) if prefix.contains('*') => Err(format!(
            "pattern {text:?}: `*` may only end a pattern (PREFIX*) or stand alone"
        )),
        Some(prefix) => Ok(Pattern::Prefix(Box::from(prefix))),
        None if text.contains('*') => Err(format!(
            "pattern {text:?}: `*` may only end a pattern (PREFIX*) or stand alone"
        )),
        None => Ok(Pattern::Exact(Box::from(text))),
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
