//! Who a request speaks for: the subject and scopes a verified token (or the local socket, or
//! a browser session) grants. Plain data, below every layer: the connection code carries it
//! without knowing how it was verified ([`crate::api::auth`] does that).

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    /// May read: health, listing, details, observing terminals and tasks.
    pub observe: bool,
    /// May also act: spawn, kill, delegate, type into panes. Implies `observe`.
    pub control: bool,
}

/// A scope an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read access.
    Observe,
    /// Write access.
    Control,
}

impl Scope {
    /// The claim spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Observe => "observe",
            Scope::Control => "control",
        }
    }
}

impl Scopes {
    /// Whether these scopes grant `scope`.
    pub fn allows(self, scope: Scope) -> bool {
        match scope {
            Scope::Observe => self.observe || self.control,
            Scope::Control => self.control,
        }
    }
}

/// The verified identity behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`, or `"anonymous"` when it has none.
    pub subject: String,
    /// Granted scopes.
    pub scopes: Scopes,
    /// Expiry, seconds since the epoch.
    pub expires_at: u64,
    /// The browser session (its id) the principal comes from, when it came with the
    /// dashboard's cookie; a logout ends what it opened.
    pub session: Option<String>,
}
