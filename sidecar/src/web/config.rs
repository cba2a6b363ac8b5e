//! `[web]`: the store staff pages and the customer pages.

use serde::{Deserialize, Serialize};

/// Longest staff name, bytes (the engine's `STAFF_ID_LEN_MAX`).
pub const STAFF_NAME_LEN_MAX: usize = pickline_engine::pickup_code::STAFF_ID_LEN_MAX;
/// Longest store address or postal code text, bytes.
pub const TEXT_LEN_MAX: usize = 512;
/// Longest accepted session lifetime (7 days), ms.
pub const SESSION_TTL_MS_MAX: u64 = 7 * 86_400_000;

/// `[web]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Serve the pages on the HTTP listener.
    pub enabled: bool,
    /// How long a staff session lasts after sign-in, ms.
    pub session_ttl_ms: u64,
    /// Mark the session cookie `Secure`. Turn on when the pages are served over TLS (a
    /// TLS-terminating proxy); a request with `X-Forwarded-Proto: https` also gets it.
    pub cookie_secure: bool,
    /// Failed sign-ins allowed per staff name within `sign_in_window_ms`; more answer 429
    /// until the window has passed.
    pub sign_in_failures_max: u32,
    /// The sign-in rate limit's window, ms.
    pub sign_in_window_ms: u64,
    /// Radius of the customer store finder, km.
    pub find_radius_km: f64,
    /// Staff who may sign in, each bound to one store (`pickline staff add` writes one).
    /// Never serialized: it holds password hashes.
    #[serde(skip_serializing)]
    pub staff: Vec<StaffConfig>,
    /// Addresses shown to customers, per store.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreInfo>,
    /// The store finder's postal-code lookup: a code typed by the customer to a position.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub postal_codes: Vec<PostalCode>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            session_ttl_ms: 12 * 3_600_000,
            cookie_secure: false,
            sign_in_failures_max: 5,
            sign_in_window_ms: 300_000,
            find_radius_km: 50.0,
            staff: Vec::new(),
            stores: Vec::new(),
            postal_codes: Vec::new(),
        }
    }
}

/// `[[web.staff]]`: one staff member.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaffConfig {
    /// Sign-in name; recorded with every action (the engine's staff id).
    pub name: String,
    /// The store (external id) whose orders this member works.
    pub store: String,
    /// Argon2 hash of the password in PHC form (`$argon2id$...`).
    pub password_hash: String,
}

impl std::fmt::Debug for StaffConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffConfig")
            .field("name", &self.name)
            .field("store", &self.store)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// `[[web.stores]]`: what customers are told about a store besides its pickup
/// instructions (which the engine keeps).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreInfo {
    /// Store external id.
    pub store: String,
    /// Street address.
    pub address: String,
}

/// `[[web.postal_codes]]`: a postal code and the position the finder searches around.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostalCode {
    /// The code as customers type it (compared ignoring case and spaces).
    pub code: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
}

impl WebConfig {
    /// Checks every field; the error names the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: String, reason: String| Err((key, reason));
        if !(60_000..=SESSION_TTL_MS_MAX).contains(&self.session_ttl_ms) {
            return bad(
                "web.session_ttl_ms".into(),
                format!("must be within 60000..={SESSION_TTL_MS_MAX}"),
            );
        }
        if !(1..=1_000).contains(&self.sign_in_failures_max) {
            return bad(
                "web.sign_in_failures_max".into(),
                "must be within 1..=1000".into(),
            );
        }
        if !(1_000..=86_400_000).contains(&self.sign_in_window_ms) {
            return bad(
                "web.sign_in_window_ms".into(),
                "must be within 1000..=86400000".into(),
            );
        }
        if !(self.find_radius_km.is_finite() && (1.0..=1_000.0).contains(&self.find_radius_km)) {
            return bad(
                "web.find_radius_km".into(),
                "must be within 1..=1000".into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.staff.iter().enumerate() {
            if let Err(e) = pickline_engine::pickup_code::StaffId::new(&s.name) {
                return bad(format!("web.staff[{i}].name"), e.to_string());
            }
            if !names.insert(s.name.as_str()) {
                return bad(
                    format!("web.staff[{i}].name"),
                    format!("{:?} is used by an earlier entry", s.name),
                );
            }
            if s.store.is_empty() || s.store.len() > 256 {
                return bad(format!("web.staff[{i}].store"), "must be a store id".into());
            }
            if let Err(e) = argon2::PasswordHash::new(&s.password_hash) {
                return bad(
                    format!("web.staff[{i}].password_hash"),
                    format!("not an argon2 PHC hash ({e}); write it with `pickline staff add`"),
                );
            }
        }
        for (i, s) in self.stores.iter().enumerate() {
            if s.address.len() > TEXT_LEN_MAX {
                return bad(
                    format!("web.stores[{i}].address"),
                    format!("longer than {TEXT_LEN_MAX} bytes"),
                );
            }
        }
        for (i, p) in self.postal_codes.iter().enumerate() {
            if p.code.trim().is_empty() || p.code.len() > 32 {
                return bad(
                    format!("web.postal_codes[{i}].code"),
                    "must be 1..=32 bytes".into(),
                );
            }
            if !(p.lat.is_finite()
                && p.lon.is_finite()
                && (-90.0..=90.0).contains(&p.lat)
                && (-180.0..=180.0).contains(&p.lon))
            {
                return bad(
                    format!("web.postal_codes[{i}]"),
                    "lat must be within -90..=90 and lon within -180..=180".into(),
                );
            }
        }
        Ok(())
    }

    /// The position of a postal code typed by a customer.
    pub fn postal_position(&self, typed: &str) -> Option<(f64, f64)> {
        let norm = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_uppercase)
                .collect()
        };
        let typed = norm(typed);
        self.postal_codes
            .iter()
            .find(|p| norm(&p.code) == typed)
            .map(|p| (p.lat, p.lon))
    }

    /// The address configured for `store`, if any.
    pub fn address(&self, store: &str) -> Option<&str> {
        self.stores
            .iter()
            .find(|s| s.store == store)
            .map(|s| s.address.as_str())
    }
}
