//! Pickup codes, the wrong-attempt limit that guards them, and the QR payload that carries
//! them.
//!
//! At `ready` the engine issues a [`PickupCode`] for the order; at hand-off the customer
//! shows it (typed, read aloud, or scanned from a QR code) and the staff tablet submits it.
//!
//! - **Entropy is injected.** [`PickupCode::from_entropy`] takes bytes that the caller drew
//!   from a CSPRNG; the engine logs them (or [`PickupCode::value`]) so that replaying the log
//!   issues the same code. Architecture invariant: nothing in this module reads a clock or a
//!   random source.
//! - **Human-friendly alphabet.** A code is [`CODE_BITS`] = 50 bits written as
//!   [`CODE_SYMBOLS`] = 10 Crockford base32 symbols, shown as `XXXXX-XXXXX`. The alphabet has
//!   no `I`, `L`, `O` or `U`; on input `I`/`L` read as `1` and `O` as `0`, case is ignored and
//!   hyphens and spaces are skipped ([`PickupCode::parse`]).
//! - **Constant-time comparison.** [`PickupCode::verify`] (and `==`) compare through
//!   [`subtle::ConstantTimeEq`], so the time taken does not depend on how many leading symbols
//!   of a guess are right.
//! - **Attempts are limited.** [`CodeAttempts`] is the per-order policy: after
//!   [`MAX_WRONG_ATTEMPTS`] wrong codes it is locked, rejects further codes without comparing
//!   them, and only a recorded [`CodeAttempts::staff_override`] unlocks it. Wrong codes and
//!   lockouts are values of [`VerifyOutcome`], not errors.
//! - **QR payload.** [`QrPayload`] is the stable text `PICKLINE1:<store>:<order>:<code>` put
//!   into the QR code; see its documentation for the exact grammar.
//!
//! Why 50 bits: with at most 5 wrong tries per lockout, an attacker who guesses at random
//! succeeds with probability 5 / 2^50 (about 4.4e-15) per lockout, while 10 symbols stay easy
//! to read out at a desk. The spec asks for at least 40.

use std::fmt;

use subtle::ConstantTimeEq;
use thiserror::Error;

/// Number of random bits in a pickup code.
pub const CODE_BITS: u32 = 50;

/// Number of Crockford base32 symbols in a pickup code (5 bits each).
pub const CODE_SYMBOLS: usize = 10;

/// Number of entropy bytes [`PickupCode::from_entropy`] takes: the smallest whole number of
/// bytes that holds [`CODE_BITS`] bits, rounded up to a `u64` so the caller can draw one.
pub const ENTROPY_BYTES: usize = 8;

/// Symbols per group in the displayed form `XXXXX-XXXXX`.
const GROUP_SYMBOLS: usize = 5;

/// Longest input [`PickupCode::parse`] looks at, in bytes. Generous for separators and
/// surrounding spaces; anything longer is not a code somebody typed, and the bound keeps the
/// work per attempt fixed.
pub const CODE_INPUT_LEN_MAX: usize = 64;

/// Wrong codes accepted before [`CodeAttempts`] locks the order.
pub const MAX_WRONG_ATTEMPTS: u32 = 5;

/// Longest staff id, in bytes.
pub const STAFF_ID_LEN_MAX: usize = 64;

/// Longest store external id or order id inside a [`QrPayload`], in bytes (before
/// percent-encoding).
pub const QR_ID_LEN_MAX: usize = 64;

/// Longest QR payload text [`QrPayload::parse`] accepts, in bytes. Two ids fully
/// percent-encoded (3 bytes per byte), the prefix, the code and the separators fit.
pub const QR_PAYLOAD_LEN_MAX: usize =
    QR_PAYLOAD_PREFIX.len() + 2 * 3 * QR_ID_LEN_MAX + 3 + CODE_SYMBOLS;

/// Tag and format version at the start of every QR payload.
pub const QR_PAYLOAD_PREFIX: &str = "PICKLINE1";

/// Crockford base32 encoding alphabet: digits and upper-case letters without I, L, O, U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Mask of the bits a code keeps.
const CODE_MASK: u64 = (1 << CODE_BITS) - 1;

/// A pickup code: a 50-bit secret, shown to people as `XXXXX-XXXXX`.
///
/// The field is private because it carries the invariant `value < 2^50`. `Debug` redacts
/// the code so that it cannot end up in logs by accident; `Display` shows it, because that
/// is what goes into the ready-for-pickup message.
#[derive(Clone, Copy)]
pub struct PickupCode(u64);

impl PickupCode {
    /// Builds a code from entropy bytes drawn by the caller from a CSPRNG.
    ///
    /// The code is the top [`CODE_BITS`] bits of the bytes read as a big-endian `u64`; the
    /// low 14 bits are ignored. Uniform input bytes give a uniform code. The same bytes
    /// always give the same code, which is what makes replay deterministic.
    pub fn from_entropy(entropy: [u8; ENTROPY_BYTES]) -> PickupCode {
        PickupCode(u64::from_be_bytes(entropy) >> (64 - CODE_BITS))
    }

    /// Rebuilds a code from its numeric value (as logged by [`PickupCode::value`]).
    pub fn from_value(value: u64) -> Result<PickupCode, CodeValueError> {
        if value > CODE_MASK {
            return Err(CodeValueError { value });
        }
        Ok(PickupCode(value))
    }

    /// The code as a number below `2^50`, for the write-ahead log.
    pub fn value(&self) -> u64 {
        self.0
    }

    /// Parses a code typed or read by a person.
    ///
    /// Normalization follows Crockford base32: case is ignored, `I` and `L` read as `1`, `O`
    /// reads as `0`, hyphens and ASCII spaces anywhere are skipped. `U` and any other
    /// character are rejected. Exactly [`CODE_SYMBOLS`] symbols must remain.
    pub fn parse(input: &str) -> Result<PickupCode, CodeParseError> {
        if input.len() > CODE_INPUT_LEN_MAX {
            return Err(CodeParseError::TooLong {
                len_bytes: input.len(),
            });
        }
        let mut value: u64 = 0;
        let mut symbols = 0usize;
        for (position, character) in input.chars().enumerate() {
            if character == '-' || character == ' ' {
                continue;
            }
            let Some(digit) = decode_symbol(character) else {
                return Err(CodeParseError::InvalidCharacter {
                    character,
                    position,
                });
            };
            symbols += 1;
            if symbols > CODE_SYMBOLS {
                // Keep counting so the error says how many symbols there were; no more
                // shifting, which would overflow.
                continue;
            }
            value = (value << 5) | u64::from(digit);
        }
        if symbols != CODE_SYMBOLS {
            return Err(CodeParseError::WrongLength { symbols });
        }
        Ok(PickupCode(value))
    }

    /// Parses the canonical form only: exactly [`CODE_SYMBOLS`] upper-case alphabet symbols,
    /// no separators, no confusables. Machine formats (the QR payload) use it so that each
    /// payload has one spelling.
    fn parse_canonical(input: &str) -> Option<PickupCode> {
        if input.len() != CODE_SYMBOLS {
            return None;
        }
        let mut value: u64 = 0;
        for byte in input.bytes() {
            let digit = ALPHABET.iter().position(|&symbol| symbol == byte)?;
            // `position` is below 32, so the cast is lossless.
            value = (value << 5) | digit as u64;
        }
        Some(PickupCode(value))
    }

    /// The ten symbols without the group separator, e.g. `0123456789` for the code shown
    /// as `01234-56789`.
    pub fn to_compact(&self) -> String {
        self.symbols()
            .iter()
            .map(|&byte| char::from(byte))
            .collect()
    }

    /// Compares with a presented code in constant time.
    pub fn verify(&self, presented: &PickupCode) -> bool {
        bool::from(self.ct_eq(presented))
    }

    /// The code's symbols, most significant first.
    fn symbols(&self) -> [u8; CODE_SYMBOLS] {
        let mut out = [0u8; CODE_SYMBOLS];
        for (index, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (CODE_SYMBOLS - 1 - index);
            // The mask keeps 5 bits, so the index is below 32.
            *slot = ALPHABET[((self.0 >> shift) & 0x1f) as usize];
        }
        out
    }
}

impl ConstantTimeEq for PickupCode {
    fn ct_eq(&self, other: &PickupCode) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

/// Equality is the constant-time comparison, so `==` is as safe as [`PickupCode::verify`].
impl PartialEq for PickupCode {
    fn eq(&self, other: &PickupCode) -> bool {
        self.verify(other)
    }
}

impl Eq for PickupCode {}

impl fmt::Debug for PickupCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickupCode(<redacted>)")
    }
}

/// Shows the grouped form `XXXXX-XXXXX`.
impl fmt::Display for PickupCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let symbols = self.symbols();
        let (first, second) = symbols.split_at(GROUP_SYMBOLS);
        for &byte in first {
            fmt::Write::write_char(f, char::from(byte))?;
        }
        f.write_str("-")?;
        for &byte in second {
            fmt::Write::write_char(f, char::from(byte))?;
        }
        Ok(())
    }
}

/// Maps one input character to its 5-bit value, with Crockford's confusable rules.
fn decode_symbol(character: char) -> Option<u8> {
    let upper = character.to_ascii_uppercase();
    let byte = match upper {
        'I' | 'L' => b'1',
        'O' => b'0',
        'U' => return None,
        c if c.is_ascii_alphanumeric() => c as u8,
        _ => return None,
    };
    // The alphabet holds 32 symbols, so the position fits in a u8.
    ALPHABET
        .iter()
        .position(|&symbol| symbol == byte)
        .map(|digit| digit as u8)
}

/// Why a typed pickup code could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodeParseError {
    /// The input is longer than [`CODE_INPUT_LEN_MAX`] bytes.
    #[error("pickup code input is {len_bytes} bytes long; at most {CODE_INPUT_LEN_MAX} are read")]
    TooLong {
        /// Length of the input in bytes.
        len_bytes: usize,
    },
    /// A character that is neither a Crockford symbol, a confusable, a hyphen nor a space.
    #[error(
        "pickup code contains {character:?} at position {position}, which is not a code symbol"
    )]
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Its position, counted in characters from 0.
        position: usize,
    },
    /// The input does not hold exactly [`CODE_SYMBOLS`] symbols.
    #[error("pickup code has {symbols} symbols; expected {CODE_SYMBOLS}")]
    WrongLength {
        /// Number of symbols found.
        symbols: usize,
    },
}

/// A logged code value that does not fit in [`CODE_BITS`] bits (a corrupt record or a bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("pickup code value {value:#x} does not fit in {CODE_BITS} bits")]
pub struct CodeValueError {
    /// The rejected value.
    pub value: u64,
}

/// Identifies the staff member who unlocked a locked order.
///
/// Non-empty, at most [`STAFF_ID_LEN_MAX`] bytes, no control characters (it is shown on
/// audit pages and written to logs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StaffId(String);

impl StaffId {
    /// Validates and wraps a staff id.
    pub fn new(id: &str) -> Result<StaffId, StaffIdError> {
        if id.is_empty() {
            return Err(StaffIdError::Empty);
        }
        if id.len() > STAFF_ID_LEN_MAX {
            return Err(StaffIdError::TooLong {
                len_bytes: id.len(),
            });
        }
        if id.chars().any(char::is_control) {
            return Err(StaffIdError::ControlCharacter);
        }
        Ok(StaffId(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StaffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a staff id was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StaffIdError {
    /// The id is empty.
    #[error("staff id is empty")]
    Empty,
    /// The id is longer than [`STAFF_ID_LEN_MAX`] bytes.
    #[error("staff id is {len_bytes} bytes long; at most {STAFF_ID_LEN_MAX} are allowed")]
    TooLong {
        /// Length of the id in bytes.
        len_bytes: usize,
    },
    /// The id contains a control character.
    #[error("staff id contains a control character")]
    ControlCharacter,
}

/// Where an order's code check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// Codes are being compared; `wrong_attempts` is below [`MAX_WRONG_ATTEMPTS`].
    Open {
        /// Wrong codes since issue or since the last staff override.
        wrong_attempts: u32,
    },
    /// [`MAX_WRONG_ATTEMPTS`] wrong codes in a row: codes are rejected without comparing
    /// until a staff override.
    Locked,
    /// The right code was presented; the code is spent and further codes are rejected.
    Accepted,
}

/// The result of presenting a code. Every variant is an ordinary business outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The code is right; hand-off may proceed. The code is now spent.
    Accepted,
    /// The code is wrong; `attempts_left` more wrong codes are allowed before lockout
    /// (always at least 1).
    Wrong {
        /// Wrong codes still allowed before the order locks.
        attempts_left: u32,
    },
    /// The code is wrong and this was the last allowed wrong code: the order is now locked.
    WrongNowLocked,
    /// The order was already locked; the code was not compared.
    Locked,
    /// The code was already accepted; the code was not compared.
    AlreadyAccepted,
    /// The typed input is not a code at all; it was not compared and does not count as a
    /// wrong attempt (see [`CodeAttempts::verify_input`]).
    Malformed(CodeParseError),
}

/// A recorded staff override: who unlocked the order, when, and which override it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffOverride {
    /// The staff member who unlocked the order.
    pub staff_id: StaffId,
    /// When, in unix milliseconds, as injected by the caller.
    pub at_ms: i64,
    /// 1 for the first override of this order, 2 for the second, and so on (saturating).
    pub sequence: u32,
}

/// The result of a staff override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideOutcome {
    /// The order was locked and is open again with a fresh allowance of wrong attempts. The
    /// record is returned so the caller can put it into the order's event.
    Unlocked(StaffOverride),
    /// The order was not locked; nothing changed and nothing was recorded.
    NotLocked,
}

/// The wrong-attempt policy for one order's pickup code: a small pure state machine.
///
/// ```text
/// Open{0} --wrong--> Open{1} ... Open{4} --wrong--> Locked --staff_override--> Open{0}
///    \--right--> Accepted          (any Open) --right--> Accepted
/// ```
///
/// Fields are private because they carry the invariant `wrong_attempts < MAX_WRONG_ATTEMPTS`
/// while open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeAttempts {
    state: AttemptState,
    /// The most recent override, kept so that staff pages can show who unlocked the order.
    /// Only the last is kept (a bound on memory per order); every override is also returned
    /// in [`OverrideOutcome::Unlocked`] for the event log, which keeps them all.
    last_override: Option<StaffOverride>,
    overrides: u32,
}

impl Default for CodeAttempts {
    fn default() -> CodeAttempts {
        CodeAttempts::new()
    }
}

impl CodeAttempts {
    /// A fresh policy for a newly issued code: open, no wrong attempts.
    pub fn new() -> CodeAttempts {
        CodeAttempts {
            state: AttemptState::Open { wrong_attempts: 0 },
            last_override: None,
            overrides: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> AttemptState {
        self.state
    }

    /// The most recent staff override, if any.
    pub fn last_override(&self) -> Option<&StaffOverride> {
        self.last_override.as_ref()
    }

    /// How many staff overrides this order has had.
    pub fn override_count(&self) -> u32 {
        self.overrides
    }

    /// Presents a parsed code against the issued one.
    ///
    /// While locked or after acceptance the code is not compared at all, so a locked order
    /// leaks nothing about the code. Otherwise the comparison is constant-time.
    pub fn verify(&mut self, issued: &PickupCode, presented: &PickupCode) -> VerifyOutcome {
        let wrong_attempts = match self.state {
            AttemptState::Locked => return VerifyOutcome::Locked,
            AttemptState::Accepted => return VerifyOutcome::AlreadyAccepted,
            AttemptState::Open { wrong_attempts } => wrong_attempts,
        };
        if issued.verify(presented) {
            self.state = AttemptState::Accepted;
            return VerifyOutcome::Accepted;
        }
        let wrong_attempts = wrong_attempts.saturating_add(1);
        if wrong_attempts >= MAX_WRONG_ATTEMPTS {
            self.state = AttemptState::Locked;
            VerifyOutcome::WrongNowLocked
        } else {
            self.state = AttemptState::Open { wrong_attempts };
            VerifyOutcome::Wrong {
                attempts_left: MAX_WRONG_ATTEMPTS - wrong_attempts,
            }
        }
    }

    /// Presents typed input against the issued code.
    ///
    /// The state is checked first, so a locked order rejects even malformed input as
    /// [`VerifyOutcome::Locked`]. Input that does not parse is
    /// [`VerifyOutcome::Malformed`] and does not count as a wrong attempt: it is not a
    /// guess at the code (anyone can tell it is malformed without knowing the code), and
    /// counting typos would lock customers out for nothing.
    pub fn verify_input(&mut self, issued: &PickupCode, input: &str) -> VerifyOutcome {
        match self.state {
            AttemptState::Locked => return VerifyOutcome::Locked,
            AttemptState::Accepted => return VerifyOutcome::AlreadyAccepted,
            AttemptState::Open { .. } => {}
        }
        match PickupCode::parse(input) {
            Ok(presented) => self.verify(issued, &presented),
            Err(error) => VerifyOutcome::Malformed(error),
        }
    }

    /// Unlocks a locked order on a staff member's authority, recording who and when.
    ///
    /// `now_ms` is injected by the caller (unix milliseconds). Only a locked order changes;
    /// an open or accepted one returns [`OverrideOutcome::NotLocked`].
    pub fn staff_override(&mut self, staff_id: StaffId, now_ms: i64) -> OverrideOutcome {
        if self.state != AttemptState::Locked {
            return OverrideOutcome::NotLocked;
        }
        self.overrides = self.overrides.saturating_add(1);
        let record = StaffOverride {
            staff_id,
            at_ms: now_ms,
            sequence: self.overrides,
        };
        self.state = AttemptState::Open { wrong_attempts: 0 };
        self.last_override = Some(record.clone());
        OverrideOutcome::Unlocked(record)
    }
}

/// The text inside a pickup QR code: which store, which order, which code.
///
/// Grammar (format version 1), stable across releases:
///
/// ```text
/// payload = "PICKLINE1" ":" store ":" order ":" code
/// store   = 1*id-char          ; the store's external id, percent-encoded
/// order   = 1*id-char          ; the engine's order id, percent-encoded
/// code    = 10 symbols of "0123456789ABCDEFGHJKMNPQRSTVWXYZ" (canonical, no hyphen)
/// id-char = ALPHA / DIGIT / "-" / "." / "_" / "~" / "%" HEXDIG HEXDIG
/// ```
///
/// Ids are percent-encoded (RFC 3986 unreserved characters stay, every other byte of the
/// UTF-8 text becomes `%XX` with upper-case hex) so that a `:` inside an id cannot move the
/// field boundaries. The encoder always writes upper-case hex; the parser accepts either
/// case but requires the canonical code form, so a payload scanned from our own QR code
/// always parses. Decoded ids are 1 to [`QR_ID_LEN_MAX`] bytes of UTF-8.
///
/// Example: `PICKLINE1:TYO-01:ord%3A42:0123456789`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrPayload {
    store_external_id: String,
    order_id: String,
    code: PickupCode,
}

impl QrPayload {
    /// Builds a payload, checking that both ids are 1 to [`QR_ID_LEN_MAX`] bytes.
    pub fn new(
        store_external_id: &str,
        order_id: &str,
        code: PickupCode,
    ) -> Result<QrPayload, QrPayloadError> {
        check_qr_id(QrField::Store, store_external_id)?;
        check_qr_id(QrField::Order, order_id)?;
        Ok(QrPayload {
            store_external_id: store_external_id.to_owned(),
            order_id: order_id.to_owned(),
            code,
        })
    }

    /// The store's external id.
    pub fn store_external_id(&self) -> &str {
        &self.store_external_id
    }

    /// The order id.
    pub fn order_id(&self) -> &str {
        &self.order_id
    }

    /// The pickup code.
    pub fn code(&self) -> PickupCode {
        self.code
    }

    /// The payload text to put into the QR code.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(
            QR_PAYLOAD_PREFIX.len()
                + 3
                + CODE_SYMBOLS
                + self.store_external_id.len()
                + self.order_id.len(),
        );
        out.push_str(QR_PAYLOAD_PREFIX);
        out.push(':');
        percent_encode_into(&mut out, &self.store_external_id);
        out.push(':');
        percent_encode_into(&mut out, &self.order_id);
        out.push(':');
        out.push_str(&self.code.to_compact());
        out
    }

    /// Parses payload text read from a QR code.
    pub fn parse(text: &str) -> Result<QrPayload, QrPayloadError> {
        if text.len() > QR_PAYLOAD_LEN_MAX {
            return Err(QrPayloadError::TooLong {
                len_bytes: text.len(),
            });
        }
        let mut fields = text.split(':');
        let (Some(prefix), Some(store), Some(order), Some(code), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(QrPayloadError::FieldCount);
        };
        if prefix != QR_PAYLOAD_PREFIX {
            return Err(QrPayloadError::UnknownPrefix);
        }
        let store_external_id = percent_decode(QrField::Store, store)?;
        let order_id = percent_decode(QrField::Order, order)?;
        let code = PickupCode::parse_canonical(code).ok_or(QrPayloadError::Code)?;
        QrPayload::new(&store_external_id, &order_id, code)
    }
}

/// Shows the payload text, the same as [`QrPayload::encode`].
impl fmt::Display for QrPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// Names an id field of a [`QrPayload`] in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrField {
    /// The store external id.
    Store,
    /// The order id.
    Order,
}

impl fmt::Display for QrField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QrField::Store => "store external id",
            QrField::Order => "order id",
        })
    }
}

/// Why a QR payload could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QrPayloadError {
    /// The text is longer than [`QR_PAYLOAD_LEN_MAX`] bytes.
    #[error("QR payload is {len_bytes} bytes long; at most {QR_PAYLOAD_LEN_MAX} are read")]
    TooLong {
        /// Length of the text in bytes.
        len_bytes: usize,
    },
    /// The text does not have exactly four `:`-separated fields.
    #[error("QR payload must have 4 fields separated by ':'")]
    FieldCount,
    /// The text does not start with [`QR_PAYLOAD_PREFIX`].
    #[error("QR payload does not start with {QR_PAYLOAD_PREFIX}")]
    UnknownPrefix,
    /// An id is empty.
    #[error("QR payload {field} is empty")]
    EmptyId {
        /// Which id.
        field: QrField,
    },
    /// An id is longer than [`QR_ID_LEN_MAX`] bytes.
    #[error("QR payload {field} is {len_bytes} bytes long; at most {QR_ID_LEN_MAX} are allowed")]
    IdTooLong {
        /// Which id.
        field: QrField,
        /// Its decoded length in bytes.
        len_bytes: usize,
    },
    /// An id holds a character outside the grammar or a broken `%XX` escape, or decodes to
    /// invalid UTF-8.
    #[error("QR payload {field} is not a valid percent-encoded UTF-8 id")]
    BadId {
        /// Which id.
        field: QrField,
    },
    /// The code field is not 10 canonical Crockford symbols.
    #[error("QR payload code is not {CODE_SYMBOLS} canonical symbols")]
    Code,
}

fn check_qr_id(field: QrField, id: &str) -> Result<(), QrPayloadError> {
    if id.is_empty() {
        return Err(QrPayloadError::EmptyId { field });
    }
    if id.len() > QR_ID_LEN_MAX {
        return Err(QrPayloadError::IdTooLong {
            field,
            len_bytes: id.len(),
        });
    }
    Ok(())
}

/// RFC 3986 unreserved characters, which stay as they are in a payload id.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn percent_encode_into(out: &mut String, id: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in id.bytes() {
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

fn percent_decode(field: QrField, text: &str) -> Result<String, QrPayloadError> {
    let bad = QrPayloadError::BadId { field };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let high = bytes.get(index + 1).and_then(|&b| hex_value(b));
            let low = bytes.get(index + 2).and_then(|&b| hex_value(b));
            let (Some(high), Some(low)) = (high, low) else {
                return Err(bad);
            };
            out.push((high << 4) | low);
            index += 3;
        } else if is_unreserved(byte) {
            out.push(byte);
            index += 1;
        } else {
            return Err(bad);
        }
    }
    String::from_utf8(out).map_err(|_| bad)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` and compares the result with `expect`: the grouped code, or the error.
    fn check(input: &str, expect: Result<&str, CodeParseError>) {
        let got = PickupCode::parse(input).map(|code| code.to_string());
        assert_eq!(
            got.as_deref().map_err(Clone::clone),
            expect,
            "input {input:?}"
        );
    }

    #[test]
    fn parse_normalizes_crockford_input() {
        check("01234-56789", Ok("01234-56789"));
        check("0123456789", Ok("01234-56789"));
        check("  abcde fghjk ", Ok("ABCDE-FGHJK"));
        check("oOiIlL-0-1-1-1", Ok("00111-10111"));
        check("ZZZZZ-ZZZZZ", Ok("ZZZZZ-ZZZZZ"));
        check("mnpqr-stvwx", Ok("MNPQR-STVWX"));
    }

    #[test]
    fn parse_rejects_bad_input() {
        check(
            "0123U-56789",
            Err(CodeParseError::InvalidCharacter {
                character: 'U',
                position: 4,
            }),
        );
        check(
            "0123u-56789",
            Err(CodeParseError::InvalidCharacter {
                character: 'u',
                position: 4,
            }),
        );
        check(
            "01234_56789",
            Err(CodeParseError::InvalidCharacter {
                character: '_',
                position: 5,
            }),
        );
        check(
            "01234\t56789",
            Err(CodeParseError::InvalidCharacter {
                character: '\t',
                position: 5,
            }),
        );
        check(
            "0123é56789",
            Err(CodeParseError::InvalidCharacter {
                character: 'é',
                position: 4,
            }),
        );
        check("", Err(CodeParseError::WrongLength { symbols: 0 }));
        check("-- --", Err(CodeParseError::WrongLength { symbols: 0 }));
        check("012345678", Err(CodeParseError::WrongLength { symbols: 9 }));
        check(
            "01234567890",
            Err(CodeParseError::WrongLength { symbols: 11 }),
        );
        check(
            "0123456789ABCDEFGHJK",
            Err(CodeParseError::WrongLength { symbols: 20 }),
        );
        let long = " ".repeat(CODE_INPUT_LEN_MAX + 1);
        check(
            &long,
            Err(CodeParseError::TooLong {
                len_bytes: CODE_INPUT_LEN_MAX + 1,
            }),
        );
    }

    #[test]
    fn entropy_uses_top_fifty_bits() {
        assert_eq!(PickupCode::from_entropy([0; 8]).to_string(), "00000-00000");
        assert_eq!(
            PickupCode::from_entropy([0xff; 8]).to_string(),
            "ZZZZZ-ZZZZZ"
        );
        assert_eq!(PickupCode::from_entropy([0xff; 8]).value(), (1 << 50) - 1);
        // The lowest kept bit is bit 14 of the big-endian u64.
        assert_eq!(PickupCode::from_entropy(0x4000u64.to_be_bytes()).value(), 1);
        assert_eq!(PickupCode::from_entropy(0x3fffu64.to_be_bytes()).value(), 0);
    }

    #[test]
    fn value_round_trips_and_is_bounded() {
        let code = PickupCode::from_value(0x2_0000_0000_0001).map(|c| c.value());
        assert_eq!(code, Ok(0x2_0000_0000_0001));
        assert_eq!(
            PickupCode::from_value(1 << 50),
            Err(CodeValueError { value: 1 << 50 })
        );
    }

    #[test]
    fn debug_redacts_the_code() {
        let code = PickupCode::from_value(12345).map(|c| format!("{c:?}"));
        assert_eq!(code.as_deref(), Ok("PickupCode(<redacted>)"));
    }

    #[test]
    fn qr_payload_escapes_separators() {
        let code = PickupCode::from_value(0).expect("in range");
        let payload = QrPayload::new("TYO-01", "ord:42 é", code).map(|p| p.encode());
        assert_eq!(
            payload.as_deref(),
            Ok("PICKLINE1:TYO-01:ord%3A42%20%C3%A9:0000000000")
        );
        let parsed = QrPayload::parse("PICKLINE1:TYO-01:ord%3a42%20%C3%A9:0000000000");
        assert_eq!(parsed.as_ref().map(QrPayload::order_id), Ok("ord:42 é"));
    }

    #[test]
    fn qr_payload_rejects_bad_text() {
        let cases: &[(&str, QrPayloadError)] = &[
            ("PICKLINE1:a:b", QrPayloadError::FieldCount),
            ("PICKLINE1:a:b:0000000000:x", QrPayloadError::FieldCount),
            ("PICKLINE2:a:b:0000000000", QrPayloadError::UnknownPrefix),
            (
                "PICKLINE1::b:0000000000",
                QrPayloadError::EmptyId {
                    field: QrField::Store,
                },
            ),
            (
                "PICKLINE1:a::0000000000",
                QrPayloadError::EmptyId {
                    field: QrField::Order,
                },
            ),
            (
                "PICKLINE1:a b:c:0000000000",
                QrPayloadError::BadId {
                    field: QrField::Store,
                },
            ),
            (
                "PICKLINE1:a:%4:0000000000",
                QrPayloadError::BadId {
                    field: QrField::Order,
                },
            ),
            (
                "PICKLINE1:a:%zz:0000000000",
                QrPayloadError::BadId {
                    field: QrField::Order,
                },
            ),
            (
                "PICKLINE1:a:%FF:0000000000",
                QrPayloadError::BadId {
                    field: QrField::Order,
                },
            ),
            ("PICKLINE1:a:b:00000-00000", QrPayloadError::Code),
            ("PICKLINE1:a:b:000000000o", QrPayloadError::Code),
            ("PICKLINE1:a:b:000000000", QrPayloadError::Code),
        ];
        for (text, expect) in cases {
            assert_eq!(
                QrPayload::parse(text).as_ref(),
                Err(expect),
                "text {text:?}"
            );
        }
        let long_id = "a".repeat(QR_ID_LEN_MAX + 1);
        assert_eq!(
            QrPayload::parse(&format!("PICKLINE1:{long_id}:b:0000000000")),
            Err(QrPayloadError::IdTooLong {
                field: QrField::Store,
                len_bytes: QR_ID_LEN_MAX + 1
            })
        );
        let huge = "a".repeat(QR_PAYLOAD_LEN_MAX + 1);
        assert_eq!(
            QrPayload::parse(&huge),
            Err(QrPayloadError::TooLong {
                len_bytes: QR_PAYLOAD_LEN_MAX + 1
            })
        );
    }

    #[test]
    fn longest_ids_fit_the_payload_limit() {
        let id = "é".repeat(QR_ID_LEN_MAX / 2);
        let code = PickupCode::from_entropy([0xa5; 8]);
        let payload = QrPayload::new(&id, &id, code).map(|p| p.encode());
        let text = payload.unwrap_or_default();
        assert_eq!(text.len(), QR_PAYLOAD_LEN_MAX);
        assert_eq!(QrPayload::parse(&text).map(|p| p.code()), Ok(code));
    }

    #[test]
    fn staff_id_is_validated() {
        assert_eq!(StaffId::new(""), Err(StaffIdError::Empty));
        assert_eq!(StaffId::new("a\nb"), Err(StaffIdError::ControlCharacter));
        assert_eq!(
            StaffId::new(&"x".repeat(STAFF_ID_LEN_MAX + 1)),
            Err(StaffIdError::TooLong {
                len_bytes: STAFF_ID_LEN_MAX + 1
            })
        );
        assert_eq!(
            StaffId::new("emp-42").map(|s| s.to_string()).as_deref(),
            Ok("emp-42")
        );
    }
}
