//! Roles a local user certificate can carry.

use std::fmt;
use std::str::FromStr;

/// The role of a local user. Peer nodes have no role: they are recognised by
/// their office, not by a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything on the local node.
    Admin,
    /// The Records service only.
    Staff,
    /// Reads the audit log and the node's state, never records or files,
    /// and changes no record, grant, user or peer (`audit witness` keeps
    /// the peer heads it checked, as the node's own checks do): the
    /// separation of duties that audit review asks for.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Staff => "staff",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "staff" => Ok(Role::Staff),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!(
                "unknown role {other:?}: use `admin`, `staff` or `auditor`"
            )),
        }
    }
}
