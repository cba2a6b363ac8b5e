//! Customer order links: an unguessable token per order, for the order status page
//! (`/p/<token>`) and for messages that point to it.
//!
//! The token is the first 128 bits of HMAC-SHA256 over the order id under a 256-bit
//! secret key, base64url without padding (22 characters). It carries no order id and
//! cannot be derived without the key, so a link names one order and guessing one means
//! guessing 128 random bits. The key is made once from the operating system's CSPRNG and
//! kept in the data directory ([`LINK_KEY_FILE`], mode 0600), so links survive restarts;
//! deleting the file revokes every link.
//!
//! Resolving a token back to its order needs an index from token to order (the web pages
//! keep one); deriving a token (what a notification does) needs only [`OrderLinks`].

use std::{io, path::Path};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use pickline_engine::OrderId;
use sha2::Sha256;

/// The key file in the data directory.
pub const LINK_KEY_FILE: &str = "order-link.key";

/// Bytes of the secret key.
pub const LINK_KEY_BYTES: usize = 32;

/// Bytes of a token (128 bits).
pub const TOKEN_BYTES: usize = 16;

/// Characters of a token's text form (base64url of [`TOKEN_BYTES`], no padding).
pub const TOKEN_LEN: usize = 22;

/// Domain separation: a key reused elsewhere would not give the same tokens.
const CONTEXT: &[u8] = b"pickline order link v1\0";

/// A token's raw bytes, the key of the resolving index.
pub type TokenBytes = [u8; TOKEN_BYTES];

/// Derives order links from the secret key.
#[derive(Clone)]
pub struct OrderLinks {
    key: [u8; LINK_KEY_BYTES],
}

impl std::fmt::Debug for OrderLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderLinks { key: <redacted> }")
    }
}

impl OrderLinks {
    /// Links under `key` (tests and benchmarks; the server uses [`OrderLinks::open`]).
    pub fn from_key(key: [u8; LINK_KEY_BYTES]) -> OrderLinks {
        OrderLinks { key }
    }

    /// The key kept in `data_dir`, made (and the directory created) on first use.
    pub fn open(data_dir: &Path) -> io::Result<OrderLinks> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(LINK_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; LINK_KEY_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} holds {} bytes, expected {LINK_KEY_BYTES}",
                            path.display(),
                            b.len()
                        ),
                    )
                })?;
                Ok(OrderLinks { key })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = random_key()?;
                write_private(&path, &key)?;
                Ok(OrderLinks { key })
            }
            Err(e) => Err(e),
        }
    }

    /// The token bytes of `order`.
    pub fn token_bytes(&self, order: OrderId) -> TokenBytes {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(CONTEXT);
        mac.update(&order.0.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; TOKEN_BYTES];
        out.copy_from_slice(&tag[..TOKEN_BYTES]);
        out
    }

    /// The token of `order` as it appears in a link.
    pub fn token(&self, order: OrderId) -> String {
        URL_SAFE_NO_PAD.encode(self.token_bytes(order))
    }

    /// The path of `order`'s status page (`/p/<token>`): prefix it with the public base URL.
    pub fn status_path(&self, order: OrderId) -> String {
        format!("/p/{}", self.token(order))
    }
}

/// The bytes of a token's text form, or `None` if it is not one.
pub fn parse_token(text: &str) -> Option<TokenBytes> {
    if text.len() != TOKEN_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    bytes.try_into().ok()
}

fn random_key() -> io::Result<[u8; LINK_KEY_BYTES]> {
    use rand::TryRng as _;
    let mut key = [0u8; LINK_KEY_BYTES];
    rand::rngs::SysRng
        .try_fill_bytes(&mut key)
        .map_err(|e| io::Error::other(format!("OS random source failed: {e}")))?;
    Ok(key)
}

/// Writes `bytes` to a new file readable by the owner only, durably (temp file, fsync,
/// rename), so a crash never leaves a short key that would change every link.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("key.new");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickline_engine::{HoldId, StoreId};

    #[test]
    fn tokens_are_stable_distinct_128_bit_and_carry_no_order_id() {
        let links = OrderLinks::from_key([7; LINK_KEY_BYTES]);
        let a = OrderId::from_hold(HoldId::new(StoreId(1), 5));
        let b = OrderId::from_hold(HoldId::new(StoreId(1), 6));
        let ta = links.token(a);
        assert_eq!(ta.len(), TOKEN_LEN);
        assert_eq!(ta, links.token(a));
        assert_ne!(ta, links.token(b));
        assert!(!ta.contains(&a.0.to_string()) && !ta.contains("O1-5"));
        assert_eq!(parse_token(&ta), Some(links.token_bytes(a)));
        assert_ne!(
            OrderLinks::from_key([8; LINK_KEY_BYTES]).token(a),
            ta,
            "another key, other links"
        );
        assert_eq!(parse_token("short"), None);
        assert_eq!(parse_token("!!!!!!!!!!!!!!!!!!!!!!"), None);
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("pickline-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let order = OrderId(42);
        let first = OrderLinks::open(&dir).unwrap().token(order);
        assert_eq!(OrderLinks::open(&dir).unwrap().token(order), first);
        std::fs::write(dir.join(LINK_KEY_FILE), b"short").unwrap();
        assert!(OrderLinks::open(&dir).is_err(), "a damaged key is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
