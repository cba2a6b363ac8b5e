//! Staff sign-in, sessions and CSRF tokens.
//!
//! - Passwords are checked against argon2 hashes from `[[web.staff]]` on a blocking
//!   thread, at most [`VERIFY_CONCURRENCY`] at once (argon2 is meant to be slow). An
//!   unknown name is checked against a dummy hash, so the answer time does not tell
//!   which names exist.
//! - Failed sign-ins are limited per staff name ([`SignInLimiter`]): after
//!   `web.sign_in_failures_max` failures within `web.sign_in_window_ms` the name answers
//!   429 until the window has passed, whatever the password.
//! - A session is 256 random bits in an HttpOnly, SameSite=Strict cookie (Secure over
//!   TLS) with a Max-Age, kept in memory with its expiry ([`Sessions`], at most
//!   [`SESSIONS_MAX`]); a restart signs everybody out.
//! - Every POST carries the session's CSRF token (a form field, compared in constant
//!   time); sign-in itself carries the token of a short pre-session cookie.
//!
//! Architecture invariant: a session is bound to one staff member and one store, and
//! every order page and action checks the order's store against it before reading the
//! order.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use subtle::ConstantTimeEq as _;

use super::config::StaffConfig;

/// The session cookie.
pub const SESSION_COOKIE: &str = "pkl_session";
/// The pre-session cookie carrying the sign-in form's CSRF token.
pub const SIGN_IN_COOKIE: &str = "pkl_signin";
/// Sessions kept at most; at the bound, expired ones are dropped, then the oldest.
pub const SESSIONS_MAX: usize = 10_000;
/// Staff names tracked by the sign-in limiter at most (unknown names included).
pub const LIMITER_NAMES_MAX: usize = 10_000;
/// Argon2 verifications running at once.
pub const VERIFY_CONCURRENCY: usize = 2;
/// Lifetime of the sign-in form's pre-session cookie.
pub const SIGN_IN_FORM_TTL: Duration = Duration::from_secs(3_600);

/// 256 random bits as base64url: session ids and CSRF tokens.
pub fn random_token() -> Result<String, String> {
    use rand::TryRng as _;
    let mut bytes = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| format!("OS random source failed: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether a presented token equals the expected one (constant time).
pub fn tokens_match(expected: &str, presented: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// An argon2id hash (PHC string) of `password` with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    use rand::TryRng as _;
    let mut salt = [0u8; 16];
    rand::rngs::SysRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| format!("OS random source failed: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks `password` against a PHC hash; a malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A signed-in staff member.
#[derive(Clone, Debug)]
pub struct Session {
    /// Staff name (recorded with every action).
    pub staff: String,
    /// The store whose orders the member works (external id).
    pub store: String,
    /// The CSRF token every POST of this session must carry.
    pub csrf: String,
    /// One message for the next page (the result of the last action).
    pub flash: Option<Flash>,
    expires_at: Instant,
}

impl Session {
    /// A session for rendering pages outside a request (`pickline bench pages`, in the
    /// binary): staff `staff` of store `store`, CSRF token `bench`, valid for an hour.
    pub fn for_bench(staff: &str, store: &str) -> Session {
        Session {
            staff: staff.to_owned(),
            store: store.to_owned(),
            csrf: "bench".to_owned(),
            flash: None,
            expires_at: Instant::now() + Duration::from_secs(3_600),
        }
    }
}

/// A message shown once, on the page after an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flash {
    /// Whether it reports a refusal.
    pub error: bool,
    /// The text.
    pub text: String,
}

/// The sessions, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session for `staff`; returns its id.
    pub fn start(&self, staff: &StaffConfig, ttl: Duration) -> Result<String, String> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut map = self.map.lock();
        if map.len() >= SESSIONS_MAX {
            map.retain(|_, s| s.expires_at > now);
        }
        if map.len() >= SESSIONS_MAX
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                staff: staff.name.clone(),
                store: staff.store.clone(),
                csrf,
                flash: None,
                expires_at: now + ttl,
            },
        );
        Ok(id)
    }

    /// The live session `id` names (an expired one is removed). Its flash stays for
    /// [`Sessions::take_flash`]: a live region fetched in between must not eat it.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock();
        let session = map.get_mut(id)?;
        if session.expires_at <= Instant::now() {
            map.remove(id);
            return None;
        }
        Some(session.clone())
    }

    /// Takes the session's message for the whole page about to be shown.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.map.lock().get_mut(id)?.flash.take()
    }

    /// Sets the message the session's next page shows.
    pub fn flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.map.lock().get_mut(id) {
            s.flash = Some(flash);
        }
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.map.lock().remove(id);
    }
}

/// Failed sign-ins per staff name within a window.
#[derive(Debug)]
pub struct SignInLimiter {
    failures_max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl SignInLimiter {
    /// At most `failures_max` failures per name within `window`.
    pub fn new(failures_max: u32, window: Duration) -> SignInLimiter {
        SignInLimiter {
            failures_max: failures_max as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `name` may try now; if not, how long until it may.
    pub fn check(&self, name: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.failures.lock();
        let Some(times) = map.get_mut(name) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() < self.failures_max {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        Err(self.window.saturating_sub(now.duration_since(oldest)))
    }

    /// Records a failure of `name`.
    pub fn failed(&self, name: &str) {
        let now = Instant::now();
        let mut map = self.failures.lock();
        if map.len() >= LIMITER_NAMES_MAX && !map.contains_key(name) {
            let window = self.window;
            map.retain(|_, t| {
                t.back()
                    .is_some_and(|last| now.duration_since(*last) < window)
            });
            if map.len() >= LIMITER_NAMES_MAX {
                // Still full of names failing right now: forget one at random-ish (the
                // first) rather than grow; the limit per name still holds for the rest.
                if let Some(k) = map.keys().next().cloned() {
                    map.remove(&k);
                }
            }
        }
        let times = map.entry(name.to_owned()).or_default();
        times.push_back(now);
        while times.len() > self.failures_max {
            times.pop_front();
        }
    }

    /// Forgets the failures of `name` (after a successful sign-in).
    pub fn succeeded(&self, name: &str) {
        self.failures.lock().remove(name);
    }
}

/// A hash no password matches in practice, checked for unknown names so that they cost
/// the same time as known ones.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password("pickline: no such staff member").unwrap_or_else(|_| {
            // Without an OS random source no session could start either; any valid PHC
            // string keeps the timing equal.
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
             O6bXCa8Ik0KW+VqxW2a+v0I0vYm0kSSmxlwsZ2W1JWE"
                .to_owned()
        })
    })
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, path `/`, `Secure` if asked, lasting
/// `max_age` (zero removes the cookie).
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    cookie::Cookie::build((name, value))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ))
        .build()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horsE"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn the_limiter_refuses_after_the_failures_max_until_the_window_passes() {
        let l = SignInLimiter::new(2, Duration::from_millis(200));
        assert!(l.check("a").is_ok());
        l.failed("a");
        assert!(l.check("a").is_ok());
        l.failed("a");
        assert!(l.check("a").is_err());
        assert!(l.check("b").is_ok(), "per name");
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.check("a").is_ok());
        l.failed("a");
        l.succeeded("a");
        assert!(l.check("a").is_ok());
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_on_request() {
        let c = set_cookie("pkl_session", "abc", Duration::from_secs(60), true);
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Max-Age=60",
            "Path=/",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        assert!(!set_cookie("x", "y", Duration::from_secs(1), false).contains("Secure"));
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "a=1; pkl_session=abc".parse().unwrap(),
        );
        assert_eq!(
            cookie_value(&headers, SESSION_COOKIE).as_deref(),
            Some("abc")
        );
        assert_eq!(cookie_value(&headers, "nope"), None);
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "ab"));
        assert!(!tokens_match("", ""));
    }
}
