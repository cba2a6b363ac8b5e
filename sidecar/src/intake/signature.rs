//! Webhook signatures, verified over the raw body (never a re-encoded parse) in constant
//! time (`hmac`'s `verify_slice`, which compares with `subtle`).
//!
//! | channel | scheme |
//! |---|---|
//! | Shopify | `X-Shopify-Hmac-Sha256`: base64(HMAC-SHA256(secret, body)) |
//! | WooCommerce | `X-WC-Webhook-Signature`: the same, keyed with the secret after WordPress's `wp_specialchars_decode` |
//! | BigCommerce | Standard Webhooks: `webhook-signature: v1,<b64>` (several, space-separated) over `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the client secret; the timestamp within [`TIMESTAMP_TOLERANCE_S`] of now |
//! | Magento, commercetools | no signed HTTP webhooks of their own (Adobe Commerce signs with a public key; commercetools delivers through queues): a relay signs with `X-Pickline-Hmac-Sha256`, as Shopify does |

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use http::HeaderMap;
use sha2::Sha256;

use super::Channel;

type HmacSha256 = Hmac<Sha256>;

/// Largest accepted distance between a Standard Webhooks timestamp and now, seconds
/// (the Standard Webhooks reference libraries use 5 minutes): bounds replays.
pub const TIMESTAMP_TOLERANCE_S: i64 = 300;

/// Header of the relay scheme (Magento, commercetools).
pub const PICKLINE_SIGNATURE_HEADER: &str = "x-pickline-hmac-sha256";

/// Why a signature was refused. Deliberately coarse: the sender learns nothing about the
/// expected value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature header (or a header it needs) is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// The header is not of the scheme's form (not base64, not `v1,`...).
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    /// The timestamp is too far from now.
    #[error("timestamp outside the {TIMESTAMP_TOLERANCE_S} s tolerance")]
    Stale,
    /// The signature does not match the body.
    #[error("signature mismatch")]
    Mismatch,
}

/// Verifies `body` against the signature headers of `channel` with `secret`. `now_s` (Unix
/// seconds, injected) is only read by timestamped schemes.
pub fn verify(
    channel: Channel,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<(), SignatureError> {
    match channel {
        Channel::Shopify => verify_b64_hmac(secret, headers, "x-shopify-hmac-sha256", body),
        Channel::Woocommerce => {
            let key = wp_specialchars_decode(secret);
            verify_b64_hmac(&key, headers, "x-wc-webhook-signature", body)
        }
        Channel::Bigcommerce => verify_standard_webhooks(secret, headers, body, now_s),
        Channel::Magento | Channel::Commercetools => {
            verify_b64_hmac(secret, headers, PICKLINE_SIGNATURE_HEADER, body)
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, SignatureError> {
    headers
        .get(name)
        .ok_or(SignatureError::MissingHeader(name))?
        .to_str()
        .map(str::trim)
        .map_err(|_| SignatureError::MalformedHeader(name))
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed), so this never fails.
    <HmacSha256 as hmac::KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

fn verify_b64_hmac(
    key: &[u8],
    headers: &HeaderMap,
    name: &'static str,
    body: &[u8],
) -> Result<(), SignatureError> {
    let expected = BASE64
        .decode(header(headers, name)?)
        .map_err(|_| SignatureError::MalformedHeader(name))?;
    let mut m = mac(key);
    m.update(body);
    m.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

fn verify_standard_webhooks(
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<(), SignatureError> {
    let id = header(headers, "webhook-id")?;
    let ts = header(headers, "webhook-timestamp")?;
    let sigs = header(headers, "webhook-signature")?;
    let at: i64 = ts
        .parse()
        .map_err(|_| SignatureError::MalformedHeader("webhook-timestamp"))?;
    if now_s.abs_diff(at) > TIMESTAMP_TOLERANCE_S.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let mut m = mac(key);
    m.update(id.as_bytes());
    m.update(b".");
    m.update(ts.as_bytes());
    m.update(b".");
    m.update(body);
    let mut any = false;
    for entry in sigs.split_ascii_whitespace() {
        // Other versions (e.g. v1a, asymmetric) are skipped, as the scheme says.
        let Some(b64) = entry.strip_prefix("v1,") else {
            continue;
        };
        any = true;
        if let Ok(sig) = BASE64.decode(b64)
            && m.clone().verify_slice(&sig).is_ok()
        {
            return Ok(());
        }
    }
    if any {
        Err(SignatureError::Mismatch)
    } else {
        Err(SignatureError::MalformedHeader("webhook-signature"))
    }
}

/// WordPress's `wp_specialchars_decode($secret, ENT_QUOTES)`, which WooCommerce applies to
/// the webhook secret before signing: the five entities it knows, nothing else.
fn wp_specialchars_decode(secret: &[u8]) -> Vec<u8> {
    const ENTITIES: [(&[u8], u8); 7] = [
        (b"&amp;", b'&'),
        (b"&lt;", b'<'),
        (b"&gt;", b'>'),
        (b"&quot;", b'"'),
        (b"&#039;", b'\''),
        (b"&#39;", b'\''),
        (b"&#x27;", b'\''),
    ];
    let mut out = Vec::with_capacity(secret.len());
    let mut rest = secret;
    'outer: while let Some((&first, tail)) = rest.split_first() {
        if first == b'&' {
            for (entity, ch) in ENTITIES {
                if let Some(after) = rest.strip_prefix(entity) {
                    out.push(ch);
                    rest = after;
                    continue 'outer;
                }
            }
        }
        out.push(first);
        rest = tail;
    }
    out
}

/// The signature header value of the HMAC schemes (Shopify, WooCommerce, relay) for
/// `body`: for senders, tests and benchmarks.
pub fn sign_b64(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    BASE64.encode(m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn woocommerce_secret_is_entity_decoded() {
        assert_eq!(wp_specialchars_decode(b"a&amp;b&lt;&#039;&x"), b"a&b<'&x");
        assert_eq!(wp_specialchars_decode(b"hush"), b"hush");
    }
}
