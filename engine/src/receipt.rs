//! E-receipts for collected pickup orders.
//!
//! When an order reaches `collected` the engine builds a [`Receipt`] from the order's lines
//! and renders it three ways: [`Receipt::to_json`] for machines, [`Receipt::to_text`] for
//! plain-text email bodies and printers, and [`Receipt::to_html`] for a printable,
//! self-contained page.
//!
//! - **Money is integers.** Amounts are `i64` minor units (cents, yen, fils) with the
//!   currency's exponent ([`Currency`]); [`format_minor_units`] places the decimal point by
//!   moving digits, never through floats. Line totals and the grand total use checked
//!   arithmetic: an overflow is [`ReceiptError::LineTotalOverflow`] or
//!   [`ReceiptError::TotalOverflow`], never a wrapped number.
//! - **Time is injected.** The collected time is unix milliseconds from the caller; the
//!   store's IANA zone only decides how it is displayed (through `jiff`, with the system
//!   time zone database). Architecture invariant: nothing here reads a clock.
//! - **Every rendering escapes.** JSON is written by hand (the engine has no serde) and
//!   escapes quotes, backslashes, control characters and `<`, `>`, `&`, U+2028 and U+2029,
//!   so it can be embedded in a `<script>` block. HTML escapes `& < > " '`. Plain text and
//!   HTML replace control characters with U+FFFD (HTML: tab and line breaks with a space)
//!   so a description cannot move a terminal's or printer's cursor or break an email body.
//! - **Bounded.** At most [`RECEIPT_LINES_MAX`] lines and [`RECEIPT_TEXT_LEN_MAX`] bytes per
//!   text field, so rendering work and output size are bounded.

use jiff::Timestamp;
use thiserror::Error;

/// Most lines one receipt may have. Far above any pickup order; bounds rendering work.
pub const RECEIPT_LINES_MAX: usize = 500;

/// Longest text field (SKU, description, ids, store name, zone), in bytes.
pub const RECEIPT_TEXT_LEN_MAX: usize = 256;

/// Longest store external id allowed inside a receipt number, in bytes.
pub const RECEIPT_STORE_ID_LEN_MAX: usize = 64;

/// Largest currency exponent accepted. ISO 4217 uses 0 to 4 (CLF and UYW have 4).
pub const CURRENCY_EXPONENT_MAX: u8 = 4;

/// Minimum number of digits of the sequence in a receipt number (zero-padded).
const RECEIPT_SEQUENCE_DIGITS: usize = 6;

/// ISO 4217 currencies whose minor-unit exponent is not 2. Any other known code below has 2.
const EXPONENT_0: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
const EXPONENT_3: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
const EXPONENT_4: &[&str] = &["CLF", "UYW"];
const EXPONENT_2: &[&str] = &[
    "AED", "ARS", "AUD", "BGN", "BRL", "CAD", "CHF", "CNY", "COP", "CZK", "DKK", "EGP", "EUR",
    "GBP", "HKD", "HUF", "IDR", "ILS", "INR", "MAD", "MXN", "MYR", "NGN", "NOK", "NZD", "PEN",
    "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "UAH",
    "USD", "ZAR",
];

/// A currency: its ISO 4217 code and the number of decimal places of its minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    /// Three ASCII upper-case letters (checked in [`Currency::new`]).
    code: [u8; 3],
    exponent: u8,
}

impl Currency {
    /// A currency with an explicit exponent, for codes missing from the built-in table.
    ///
    /// The code must be three ASCII upper-case letters and the exponent at most
    /// [`CURRENCY_EXPONENT_MAX`].
    pub fn new(code: &str, exponent: u8) -> Result<Currency, ReceiptError> {
        let bytes: [u8; 3] = code
            .as_bytes()
            .try_into()
            .map_err(|_| ReceiptError::InvalidCurrencyCode)?;
        if !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(ReceiptError::InvalidCurrencyCode);
        }
        if exponent > CURRENCY_EXPONENT_MAX {
            return Err(ReceiptError::CurrencyExponentTooLarge { exponent });
        }
        Ok(Currency {
            code: bytes,
            exponent,
        })
    }

    /// A currency from the built-in ISO 4217 table (JPY 0, USD and EUR 2, KWD 3, ...).
    pub fn iso(code: &str) -> Result<Currency, ReceiptError> {
        let exponent = if EXPONENT_0.contains(&code) {
            0
        } else if EXPONENT_2.contains(&code) {
            2
        } else if EXPONENT_3.contains(&code) {
            3
        } else if EXPONENT_4.contains(&code) {
            4
        } else {
            return Err(ReceiptError::UnknownCurrency {
                code: code.chars().take(8).collect(),
            });
        };
        Currency::new(code, exponent)
    }

    /// The ISO 4217 code, e.g. `JPY`.
    pub fn code(&self) -> &str {
        // The bytes are ASCII upper-case letters by construction, so this never fails; the
        // fallback keeps the function total anyway.
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// Decimal places of the minor unit: 0 for JPY, 2 for USD, 3 for KWD.
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// Formats an amount of minor units in this currency, e.g. `-12.34` for -1234 USD cents.
    pub fn format(&self, amount_minor: i64) -> String {
        format_minor_units(amount_minor, self.exponent)
    }
}

/// Formats minor units as a decimal number with `exponent` decimal places, without floats.
///
/// `format_minor_units(-5, 2)` is `-0.05`, `format_minor_units(1500, 0)` is `1500`,
/// `format_minor_units(1, 3)` is `0.001`. No thousands separators: those depend on locale.
/// Every `i64` is formatted exactly, including `i64::MIN`.
pub fn format_minor_units(amount_minor: i64, exponent: u8) -> String {
    let digits = amount_minor.unsigned_abs().to_string();
    let exponent = usize::from(exponent);
    let mut out = String::with_capacity(digits.len() + exponent + 3);
    if amount_minor < 0 {
        out.push('-');
    }
    if exponent == 0 {
        out.push_str(&digits);
    } else if digits.len() <= exponent {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', exponent - digits.len()));
        out.push_str(&digits);
    } else {
        let (whole, fraction) = digits.split_at(digits.len() - exponent);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    }
    out
}

/// A receipt number, `R-<store external id>-<sequence>`, e.g. `R-TYO01-000123`.
///
/// The sequence is per store and zero-padded to at least 6 digits. Numbers are unique as
/// long as (store, sequence) pairs are: the sequence is always the part after the last `-`
/// and is all digits, so no two pairs give the same text even when store ids contain `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReceiptNumber(String);

impl ReceiptNumber {
    /// Builds the number for a store's `sequence`-th receipt.
    ///
    /// The store external id must be 1 to [`RECEIPT_STORE_ID_LEN_MAX`] bytes of ASCII
    /// letters, digits, `-`, `_` or `.`, so the number is safe to print, type and put in a
    /// file name.
    pub fn new(store_external_id: &str, sequence: u64) -> Result<ReceiptNumber, ReceiptError> {
        let valid = !store_external_id.is_empty()
            && store_external_id.len() <= RECEIPT_STORE_ID_LEN_MAX
            && store_external_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(ReceiptError::InvalidStoreId);
        }
        Ok(ReceiptNumber(format!(
            "R-{store_external_id}-{sequence:0width$}",
            width = RECEIPT_SEQUENCE_DIGITS
        )))
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ReceiptNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One line of an order as it goes onto the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptLine {
    /// The SKU; 1 to [`RECEIPT_TEXT_LEN_MAX`] bytes.
    pub sku: String,
    /// What the customer sees; up to [`RECEIPT_TEXT_LEN_MAX`] bytes, may be empty.
    pub description: String,
    /// Units collected; at least 1.
    pub qty: u32,
    /// Price of one unit in minor units of the receipt's currency. May be negative for a
    /// discount line.
    pub unit_price_minor: i64,
}

/// Everything needed to build a [`Receipt`]. Plain data; [`Receipt::new`] validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptInput {
    /// The receipt number.
    pub receipt_number: ReceiptNumber,
    /// The engine's order id.
    pub order_id: String,
    /// The sales channel's order id (what the customer knows, e.g. `#1001`).
    pub channel_order_id: String,
    /// The store's display name.
    pub store_name: String,
    /// The store's IANA time zone, e.g. `Asia/Tokyo`.
    pub store_time_zone: String,
    /// When the order was collected, unix milliseconds (injected by the caller).
    pub collected_at_ms: i64,
    /// The currency of every price.
    pub currency: Currency,
    /// The lines, in display order; 1 to [`RECEIPT_LINES_MAX`].
    pub lines: Vec<ReceiptLine>,
}

/// A receipt line with its computed total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    line: ReceiptLine,
    line_total_minor: i64,
}

impl PricedLine {
    /// The line as given.
    pub fn line(&self) -> &ReceiptLine {
        &self.line
    }

    /// `qty * unit_price_minor`, computed without overflow.
    pub fn line_total_minor(&self) -> i64 {
        self.line_total_minor
    }
}

/// A validated e-receipt with its totals computed. Fields are private because the totals
/// and the local time must agree with the lines and the timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    receipt_number: ReceiptNumber,
    order_id: String,
    channel_order_id: String,
    store_name: String,
    store_time_zone: String,
    collected_at_ms: i64,
    /// RFC 3339 with the store's offset, e.g. `2026-11-26T14:05:00+09:00`.
    collected_local_rfc3339: String,
    /// For people, e.g. `2026-11-26 14:05 JST`.
    collected_local_display: String,
    currency: Currency,
    lines: Vec<PricedLine>,
    total_qty: u64,
    total_minor: i64,
}

impl Receipt {
    /// Validates the input, computes line totals and totals, and resolves the local time.
    pub fn new(input: ReceiptInput) -> Result<Receipt, ReceiptError> {
        check_text("order_id", &input.order_id, false)?;
        check_text("channel_order_id", &input.channel_order_id, false)?;
        check_text("store_name", &input.store_name, false)?;
        check_text("store_time_zone", &input.store_time_zone, false)?;
        if input.lines.is_empty() {
            return Err(ReceiptError::NoLines);
        }
        if input.lines.len() > RECEIPT_LINES_MAX {
            return Err(ReceiptError::TooManyLines {
                lines: input.lines.len(),
            });
        }

        let timestamp = Timestamp::from_millisecond(input.collected_at_ms).map_err(|_| {
            ReceiptError::TimestampOutOfRange {
                ms: input.collected_at_ms,
            }
        })?;
        let zoned =
            timestamp
                .in_tz(&input.store_time_zone)
                .map_err(|_| ReceiptError::UnknownTimeZone {
                    zone: input.store_time_zone.clone(),
                })?;
        let collected_local_rfc3339 = jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%S%:z", &zoned)
            .map_err(|_| ReceiptError::TimeFormat)?;
        let collected_local_display = jiff::fmt::strtime::format("%Y-%m-%d %H:%M %Z", &zoned)
            .map_err(|_| ReceiptError::TimeFormat)?;

        let mut lines = Vec::with_capacity(input.lines.len());
        let mut total_qty: u64 = 0;
        let mut total_minor: i64 = 0;
        for (index, line) in input.lines.into_iter().enumerate() {
            check_text("sku", &line.sku, false)?;
            check_text("description", &line.description, true)?;
            if line.qty == 0 {
                return Err(ReceiptError::ZeroQuantity { line: index });
            }
            let line_total_minor = line
                .unit_price_minor
                .checked_mul(i64::from(line.qty))
                .ok_or(ReceiptError::LineTotalOverflow { line: index })?;
            total_minor = total_minor
                .checked_add(line_total_minor)
                .ok_or(ReceiptError::TotalOverflow)?;
            total_qty = total_qty
                .checked_add(u64::from(line.qty))
                .ok_or(ReceiptError::TotalOverflow)?;
            lines.push(PricedLine {
                line,
                line_total_minor,
            });
        }

        Ok(Receipt {
            receipt_number: input.receipt_number,
            order_id: input.order_id,
            channel_order_id: input.channel_order_id,
            store_name: input.store_name,
            store_time_zone: input.store_time_zone,
            collected_at_ms: input.collected_at_ms,
            collected_local_rfc3339,
            collected_local_display,
            currency: input.currency,
            lines,
            total_qty,
            total_minor,
        })
    }

    /// The receipt number.
    pub fn receipt_number(&self) -> &ReceiptNumber {
        &self.receipt_number
    }

    /// The engine's order id.
    pub fn order_id(&self) -> &str {
        &self.order_id
    }

    /// The channel's order id.
    pub fn channel_order_id(&self) -> &str {
        &self.channel_order_id
    }

    /// The store's display name.
    pub fn store_name(&self) -> &str {
        &self.store_name
    }

    /// The store's IANA time zone.
    pub fn store_time_zone(&self) -> &str {
        &self.store_time_zone
    }

    /// When the order was collected, unix milliseconds.
    pub fn collected_at_ms(&self) -> i64 {
        self.collected_at_ms
    }

    /// The collected time in the store's zone as RFC 3339, e.g. `2026-11-26T14:05:00+09:00`.
    pub fn collected_local_rfc3339(&self) -> &str {
        &self.collected_local_rfc3339
    }

    /// The collected time in the store's zone for people, e.g. `2026-11-26 14:05 JST`.
    pub fn collected_local_display(&self) -> &str {
        &self.collected_local_display
    }

    /// The currency of every amount.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The lines with their totals, in display order.
    pub fn lines(&self) -> &[PricedLine] {
        &self.lines
    }

    /// Sum of the lines' quantities.
    pub fn total_qty(&self) -> u64 {
        self.total_qty
    }

    /// Sum of the line totals in minor units.
    pub fn total_minor(&self) -> i64 {
        self.total_minor
    }

    /// The receipt as one line of JSON (format `pickline.receipt.v1`).
    ///
    /// Amounts appear twice: as integers of minor units (`*_minor`, exact for every `i64`;
    /// note that JavaScript reads integers above 2^53 inexactly) and as decimal strings
    /// formatted with the currency's exponent. The output is safe to embed in HTML
    /// `<script>`: `<`, `>` and `&` are written as `\u003c`, `\u003e`, `\u0026`.
    pub fn to_json(&self) -> String {
        let mut json = JsonObject::new();
        json.string("format", "pickline.receipt.v1");
        json.string("receipt_number", self.receipt_number.as_str());
        json.string("order_id", &self.order_id);
        json.string("channel_order_id", &self.channel_order_id);
        json.string("store_name", &self.store_name);
        json.string("time_zone", &self.store_time_zone);
        json.integer("collected_at_ms", self.collected_at_ms);
        json.string("collected_at_local", &self.collected_local_rfc3339);
        json.raw("currency", &{
            let mut currency = JsonObject::new();
            currency.string("code", self.currency.code());
            currency.integer("exponent", i64::from(self.currency.exponent()));
            currency.finish()
        });
        let mut lines = String::from("[");
        for (index, priced) in self.lines.iter().enumerate() {
            if index > 0 {
                lines.push(',');
            }
            let line = &priced.line;
            let mut object = JsonObject::new();
            object.string("sku", &line.sku);
            object.string("description", &line.description);
            object.integer("qty", i64::from(line.qty));
            object.integer("unit_price_minor", line.unit_price_minor);
            object.string("unit_price", &self.currency.format(line.unit_price_minor));
            object.integer("line_total_minor", priced.line_total_minor);
            object.string("line_total", &self.currency.format(priced.line_total_minor));
            lines.push_str(&object.finish());
        }
        lines.push(']');
        json.raw("lines", &lines);
        json.unsigned("total_qty", self.total_qty);
        json.integer("total_minor", self.total_minor);
        json.string("total", &self.currency.format(self.total_minor));
        json.finish()
    }

    /// The receipt as aligned plain text, one line per item, ending with a newline.
    ///
    /// Columns are aligned by counting characters, which is right for Latin, Greek,
    /// Cyrillic and most scripts; East Asian wide characters take two cells on a terminal,
    /// so columns after a wide description drift. Control characters become U+FFFD.
    pub fn to_text(&self) -> String {
        let currency = self.currency;
        let header = ["SKU", "Description", "Qty", "Unit price", "Line total"];
        let rows: Vec<[String; 5]> = self
            .lines
            .iter()
            .map(|priced| {
                [
                    sanitize_text(&priced.line.sku),
                    sanitize_text(&priced.line.description),
                    priced.line.qty.to_string(),
                    currency.format(priced.line.unit_price_minor),
                    currency.format(priced.line_total_minor),
                ]
            })
            .collect();
        let total_row = [
            "Total".to_owned(),
            String::new(),
            self.total_qty.to_string(),
            String::new(),
            currency.format(self.total_minor),
        ];
        let mut widths = header.map(|title| title.chars().count());
        for row in rows.iter().chain(std::iter::once(&total_row)) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        // Text columns are left-aligned, numbers right-aligned.
        let right_aligned = [false, false, true, true, true];

        let mut out = String::new();
        out.push_str("Pickline receipt ");
        out.push_str(self.receipt_number.as_str());
        out.push('\n');
        let facts = [
            ("Store", sanitize_text(&self.store_name)),
            ("Order", sanitize_text(&self.order_id)),
            ("Channel order", sanitize_text(&self.channel_order_id)),
            (
                "Collected",
                format!(
                    "{} ({})",
                    self.collected_local_display,
                    sanitize_text(&self.store_time_zone)
                ),
            ),
            ("Currency", currency.code().to_owned()),
        ];
        let label_width = facts
            .iter()
            .map(|(label, _)| label.len())
            .max()
            .unwrap_or(0);
        for (label, value) in &facts {
            push_padded(&mut out, label, label_width, false);
            out.push_str("  ");
            out.push_str(value);
            out.push('\n');
        }
        out.push('\n');

        let rule: [String; 5] = widths.map(|width| "-".repeat(width));
        push_row(
            &mut out,
            &header.map(str::to_owned),
            &widths,
            &right_aligned,
        );
        push_row(&mut out, &rule, &widths, &right_aligned);
        for row in &rows {
            push_row(&mut out, row, &widths, &right_aligned);
        }
        push_row(&mut out, &rule, &widths, &right_aligned);
        push_row(&mut out, &total_row, &widths, &right_aligned);
        out
    }

    /// The receipt as a self-contained, printable HTML page (inline CSS, no scripts, no
    /// external resources). Every value is HTML-escaped.
    pub fn to_html(&self) -> String {
        let currency = self.currency;
        let number = html_escape(self.receipt_number.as_str());
        let mut out = String::with_capacity(2048 + 256 * self.lines.len());
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        out.push_str("<title>Receipt ");
        out.push_str(&number);
        out.push_str("</title>\n<style>\n");
        out.push_str(HTML_STYLE);
        out.push_str("</style>\n</head>\n<body>\n<main>\n<h1>Receipt ");
        out.push_str(&number);
        out.push_str("</h1>\n<dl>\n");
        let facts = [
            ("Store", html_escape(&self.store_name)),
            ("Order", html_escape(&self.order_id)),
            ("Channel order", html_escape(&self.channel_order_id)),
            (
                "Collected",
                format!(
                    "<time datetime=\"{}\">{}</time> ({})",
                    html_escape(&self.collected_local_rfc3339),
                    html_escape(&self.collected_local_display),
                    html_escape(&self.store_time_zone)
                ),
            ),
            ("Currency", html_escape(currency.code())),
        ];
        for (label, value) in &facts {
            out.push_str("<dt>");
            out.push_str(label);
            out.push_str("</dt><dd>");
            out.push_str(value);
            out.push_str("</dd>\n");
        }
        out.push_str("</dl>\n<table>\n<thead><tr><th>SKU</th><th>Description</th>");
        out.push_str("<th class=\"num\">Qty</th><th class=\"num\">Unit price</th>");
        out.push_str("<th class=\"num\">Line total</th></tr></thead>\n<tbody>\n");
        for priced in &self.lines {
            let line = &priced.line;
            out.push_str("<tr><td>");
            out.push_str(&html_escape(&line.sku));
            out.push_str("</td><td>");
            out.push_str(&html_escape(&line.description));
            out.push_str("</td><td class=\"num\">");
            out.push_str(&line.qty.to_string());
            out.push_str("</td><td class=\"num\">");
            out.push_str(&currency.format(line.unit_price_minor));
            out.push_str("</td><td class=\"num\">");
            out.push_str(&currency.format(priced.line_total_minor));
            out.push_str("</td></tr>\n");
        }
        out.push_str("</tbody>\n<tfoot><tr><td colspan=\"2\">Total</td><td class=\"num\">");
        out.push_str(&self.total_qty.to_string());
        out.push_str("</td><td></td><td class=\"num\">");
        out.push_str(&currency.format(self.total_minor));
        out.push(' ');
        out.push_str(&html_escape(currency.code()));
        out.push_str("</td></tr></tfoot>\n</table>\n</main>\n</body>\n</html>\n");
        out
    }
}

/// Inline CSS for [`Receipt::to_html`]: readable on screen, plain black on white in print.
const HTML_STYLE: &str = "\
body{font-family:system-ui,sans-serif;color:#000;background:#fff;margin:0}
main{max-width:42rem;margin:1rem auto;padding:0 1rem}
h1{font-size:1.3rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}
dt{font-weight:bold}
dd{margin:0}
table{width:100%;border-collapse:collapse;margin-top:1rem}
th,td{padding:.25rem .5rem;border-bottom:1px solid #999;text-align:left;vertical-align:top}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tfoot td{font-weight:bold;border-bottom:none}
@media print{main{max-width:none;margin:0}@page{margin:1cm}}
";

/// Why a receipt could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReceiptError {
    /// The store external id is empty, too long or has characters outside `A-Za-z0-9-_.`.
    #[error(
        "store external id must be 1 to {RECEIPT_STORE_ID_LEN_MAX} bytes of ASCII letters, digits, '-', '_' or '.'"
    )]
    InvalidStoreId,
    /// The currency code is not three ASCII upper-case letters.
    #[error("currency code must be three ASCII upper-case letters")]
    InvalidCurrencyCode,
    /// The currency code is not in the built-in table; use [`Currency::new`].
    #[error("currency {code:?} is not in the built-in table; give its exponent explicitly")]
    UnknownCurrency {
        /// The code as given (at most 8 characters of it).
        code: String,
    },
    /// The currency exponent is above [`CURRENCY_EXPONENT_MAX`].
    #[error("currency exponent {exponent} is above {CURRENCY_EXPONENT_MAX}")]
    CurrencyExponentTooLarge {
        /// The exponent given.
        exponent: u8,
    },
    /// A required text field is empty.
    #[error("receipt field {field} is empty")]
    EmptyField {
        /// The field's name.
        field: &'static str,
    },
    /// A text field is longer than [`RECEIPT_TEXT_LEN_MAX`] bytes.
    #[error(
        "receipt field {field} is {len_bytes} bytes long; at most {RECEIPT_TEXT_LEN_MAX} are allowed"
    )]
    FieldTooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len_bytes: usize,
    },
    /// The receipt has no lines.
    #[error("receipt has no lines")]
    NoLines,
    /// The receipt has more than [`RECEIPT_LINES_MAX`] lines.
    #[error("receipt has {lines} lines; at most {RECEIPT_LINES_MAX} are allowed")]
    TooManyLines {
        /// Number of lines given.
        lines: usize,
    },
    /// A line has quantity 0.
    #[error("receipt line {line} has quantity 0")]
    ZeroQuantity {
        /// Index of the line, from 0.
        line: usize,
    },
    /// `qty * unit_price_minor` does not fit in an `i64`.
    #[error("receipt line {line}: quantity times unit price overflows")]
    LineTotalOverflow {
        /// Index of the line, from 0.
        line: usize,
    },
    /// The sum of line totals (or quantities) does not fit.
    #[error("receipt total overflows")]
    TotalOverflow,
    /// The collected time is outside the range `jiff` supports (years -9999 to 9999).
    #[error("collected time {ms} ms is out of range")]
    TimestampOutOfRange {
        /// The timestamp given.
        ms: i64,
    },
    /// The store's time zone is not in the time zone database.
    #[error("unknown time zone {zone:?}")]
    UnknownTimeZone {
        /// The zone given.
        zone: String,
    },
    /// Formatting the local time failed (a bug: the format strings are constants).
    #[error("could not format the collected time")]
    TimeFormat,
}

fn check_text(field: &'static str, value: &str, may_be_empty: bool) -> Result<(), ReceiptError> {
    if value.is_empty() && !may_be_empty {
        return Err(ReceiptError::EmptyField { field });
    }
    if value.len() > RECEIPT_TEXT_LEN_MAX {
        return Err(ReceiptError::FieldTooLong {
            field,
            len_bytes: value.len(),
        });
    }
    Ok(())
}

/// Builds one JSON object, keys in insertion order.
struct JsonObject {
    out: String,
    empty: bool,
}

impl JsonObject {
    fn new() -> JsonObject {
        JsonObject {
            out: String::from("{"),
            empty: true,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        json_string_into(&mut self.out, key);
        self.out.push(':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        json_string_into(&mut self.out, value);
    }

    fn integer(&mut self, key: &str, value: i64) {
        self.key(key);
        self.out.push_str(&value.to_string());
    }

    fn unsigned(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out.push_str(&value.to_string());
    }

    /// Appends an already-encoded JSON value.
    fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.out.push_str(json);
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Appends `value` as a JSON string literal (RFC 8259), quotes included.
fn json_string_into(out: &mut String, value: &str) {
    out.push('"');
    for character in value.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            // Control characters must be escaped; `<`, `>` and `&` are escaped so the JSON can
            // sit inside an HTML <script> element (no `</script>` or `<!--`); U+2028 and
            // U+2029 are line terminators in older JavaScript string literals.
            c if c < ' '
                || c == '\u{7f}'
                || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') =>
            {
                push_unicode_escape(out, u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `\uXXXX` for a code point in the Basic Multilingual Plane.
fn push_unicode_escape(out: &mut String, code_point: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        // The mask keeps 4 bits, so the index is below 16.
        out.push(char::from(HEX[((code_point >> shift) & 0xf) as usize]));
    }
}

/// Escapes text for HTML element content and quoted attribute values. Tab, line feed and
/// carriage return become a space; other control characters become U+FFFD (they are not
/// allowed in HTML text).
fn html_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 16);
    for character in value.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // HTML renders these as a space anyway; writing a space keeps stray carriage
            // returns out of email bodies.
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Replaces control characters (including tab and newline, which would break the columns)
/// with U+FFFD for plain-text output.
fn sanitize_text(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn push_padded(out: &mut String, cell: &str, width: usize, right_aligned: bool) {
    let padding = width.saturating_sub(cell.chars().count());
    if right_aligned {
        out.extend(std::iter::repeat_n(' ', padding));
        out.push_str(cell);
    } else {
        out.push_str(cell);
        out.extend(std::iter::repeat_n(' ', padding));
    }
}

fn push_row(out: &mut String, row: &[String; 5], widths: &[usize; 5], right_aligned: &[bool; 5]) {
    let mut line = String::new();
    for (index, ((cell, &width), &right)) in row.iter().zip(widths).zip(right_aligned).enumerate() {
        if index > 0 {
            line.push_str("  ");
        }
        push_padded(&mut line, cell, width, right);
    }
    // No trailing spaces: they are invisible and some mail clients strip them.
    out.push_str(line.trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-26T05:05:00Z, which is 14:05 in Tokyo.
    const COLLECTED_AT_MS: i64 = 1_795_669_500_000;

    fn line(sku: &str, description: &str, qty: u32, unit_price_minor: i64) -> ReceiptLine {
        ReceiptLine {
            sku: sku.to_owned(),
            description: description.to_owned(),
            qty,
            unit_price_minor,
        }
    }

    fn input(currency: &str, lines: Vec<ReceiptLine>) -> ReceiptInput {
        ReceiptInput {
            receipt_number: ReceiptNumber::new("TYO01", 123).expect("valid store id"),
            order_id: "ord-1".to_owned(),
            channel_order_id: "#1001".to_owned(),
            store_name: "Shibuya".to_owned(),
            store_time_zone: "Asia/Tokyo".to_owned(),
            collected_at_ms: COLLECTED_AT_MS,
            currency: Currency::iso(currency).expect("known currency"),
            lines,
        }
    }

    #[test]
    fn formats_minor_units_without_floats() {
        let cases: &[(i64, u8, &str)] = &[
            (0, 0, "0"),
            (0, 2, "0.00"),
            (0, 3, "0.000"),
            (5, 2, "0.05"),
            (-5, 2, "-0.05"),
            (10, 2, "0.10"),
            (100, 2, "1.00"),
            (123_456, 2, "1234.56"),
            (-123_456, 2, "-1234.56"),
            (1500, 0, "1500"),
            (-1500, 0, "-1500"),
            (1, 3, "0.001"),
            (-1234, 3, "-1.234"),
            (12_345, 4, "1.2345"),
            (i64::MAX, 0, "9223372036854775807"),
            (i64::MIN, 2, "-92233720368547758.08"),
            (i64::MIN, 0, "-9223372036854775808"),
        ];
        for &(amount, exponent, expect) in cases {
            assert_eq!(
                format_minor_units(amount, exponent),
                expect,
                "{amount} e{exponent}"
            );
        }
    }

    #[test]
    fn currency_table_and_validation() {
        let exponent = |code: &str| Currency::iso(code).map(|c| c.exponent());
        assert_eq!(exponent("JPY"), Ok(0));
        assert_eq!(exponent("USD"), Ok(2));
        assert_eq!(exponent("EUR"), Ok(2));
        assert_eq!(exponent("KWD"), Ok(3));
        assert_eq!(exponent("CLF"), Ok(4));
        assert_eq!(
            exponent("ABC"),
            Err(ReceiptError::UnknownCurrency {
                code: "ABC".to_owned()
            })
        );
        assert_eq!(
            Currency::new("usd", 2),
            Err(ReceiptError::InvalidCurrencyCode)
        );
        assert_eq!(
            Currency::new("US", 2),
            Err(ReceiptError::InvalidCurrencyCode)
        );
        assert_eq!(
            Currency::new("USDX", 2),
            Err(ReceiptError::InvalidCurrencyCode)
        );
        assert_eq!(
            Currency::new("XTS", 5),
            Err(ReceiptError::CurrencyExponentTooLarge { exponent: 5 })
        );
        assert_eq!(
            Currency::new("XTS", 1).map(|c| c.format(-15)),
            Ok("-1.5".to_owned())
        );
        assert_eq!(
            Currency::iso("KWD").map(|c| c.code().to_owned()),
            Ok("KWD".to_owned())
        );
    }

    #[test]
    fn receipt_numbers() {
        let number =
            |store: &str, sequence| ReceiptNumber::new(store, sequence).map(|n| n.to_string());
        assert_eq!(number("TYO01", 123), Ok("R-TYO01-000123".to_owned()));
        assert_eq!(number("a.b_c-d", 0), Ok("R-a.b_c-d-000000".to_owned()));
        assert_eq!(number("NYC", 1_234_567), Ok("R-NYC-1234567".to_owned()));
        for bad in [
            "",
            "a b",
            "ä",
            "a:b",
            &"x".repeat(RECEIPT_STORE_ID_LEN_MAX + 1),
        ] {
            assert_eq!(number(bad, 1), Err(ReceiptError::InvalidStoreId), "{bad:?}");
        }
    }

    #[test]
    fn totals_use_checked_arithmetic() {
        let receipt = Receipt::new(input(
            "USD",
            vec![line("A", "apple", 3, 199), line("B", "coupon", 1, -100)],
        ))
        .expect("valid");
        let totals: Vec<i64> = receipt
            .lines()
            .iter()
            .map(PricedLine::line_total_minor)
            .collect();
        assert_eq!(totals, [597, -100]);
        assert_eq!(receipt.total_minor(), 497);
        assert_eq!(receipt.total_qty(), 4);

        let error = |lines| Receipt::new(input("USD", lines)).err();
        assert_eq!(
            error(vec![line("A", "", 2, i64::MAX)]),
            Some(ReceiptError::LineTotalOverflow { line: 0 })
        );
        assert_eq!(
            error(vec![line("A", "", 1, 1), line("B", "", 2, i64::MIN)]),
            Some(ReceiptError::LineTotalOverflow { line: 1 })
        );
        assert_eq!(
            error(vec![line("A", "", 1, i64::MAX), line("B", "", 1, 1)]),
            Some(ReceiptError::TotalOverflow)
        );
        assert_eq!(
            error(vec![line("A", "", 1, i64::MIN), line("B", "", 1, -1)]),
            Some(ReceiptError::TotalOverflow)
        );
        assert_eq!(
            error(vec![line("A", "", 0, 1)]),
            Some(ReceiptError::ZeroQuantity { line: 0 })
        );
        assert_eq!(error(vec![]), Some(ReceiptError::NoLines));
        assert_eq!(
            error(vec![line("A", "", 1, 1); RECEIPT_LINES_MAX + 1]),
            Some(ReceiptError::TooManyLines {
                lines: RECEIPT_LINES_MAX + 1
            })
        );
        assert_eq!(
            error(vec![line("", "", 1, 1)]),
            Some(ReceiptError::EmptyField { field: "sku" })
        );
        assert_eq!(
            error(vec![line("A", &"d".repeat(RECEIPT_TEXT_LEN_MAX + 1), 1, 1)]),
            Some(ReceiptError::FieldTooLong {
                field: "description",
                len_bytes: RECEIPT_TEXT_LEN_MAX + 1
            })
        );
    }

    #[test]
    fn local_time_follows_the_store_zone() {
        let local = |zone: &str, ms: i64| {
            let mut receipt_input = input("JPY", vec![line("A", "", 1, 1)]);
            receipt_input.store_time_zone = zone.to_owned();
            receipt_input.collected_at_ms = ms;
            Receipt::new(receipt_input).map(|r| {
                (
                    r.collected_local_rfc3339().to_owned(),
                    r.collected_local_display().to_owned(),
                )
            })
        };
        assert_eq!(
            local("Asia/Tokyo", COLLECTED_AT_MS),
            Ok((
                "2026-11-26T14:05:00+09:00".to_owned(),
                "2026-11-26 14:05 JST".to_owned()
            ))
        );
        // 2026-03-08 is the US spring-forward day: 06:30Z is 01:30 EST, 07:30Z is 03:30 EDT.
        let spring_forward_ms = 1_772_955_000_000;
        assert_eq!(
            local("America/New_York", spring_forward_ms - 3_600_000).map(|t| t.0),
            Ok("2026-03-08T01:30:00-05:00".to_owned())
        );
        assert_eq!(
            local("America/New_York", spring_forward_ms).map(|t| t.1),
            Ok("2026-03-08 03:30 EDT".to_owned())
        );
        assert_eq!(
            local("Mars/Olympus_Mons", 0),
            Err(ReceiptError::UnknownTimeZone {
                zone: "Mars/Olympus_Mons".to_owned()
            })
        );
        assert_eq!(
            local("UTC", i64::MAX),
            Err(ReceiptError::TimestampOutOfRange { ms: i64::MAX })
        );
    }

    #[test]
    fn text_is_aligned() {
        let receipt = Receipt::new(input(
            "KWD",
            vec![
                line("SKU-1", "Tea", 2, 1500),
                line("SKU-22", "Dates\tbox", 10, -250),
            ],
        ))
        .expect("valid");
        let expect = "\
Pickline receipt R-TYO01-000123
Store          Shibuya
Order          ord-1
Channel order  #1001
Collected      2026-11-26 14:05 JST (Asia/Tokyo)
Currency       KWD

SKU     Description  Qty  Unit price  Line total
------  -----------  ---  ----------  ----------
SKU-1   Tea            2       1.500       3.000
SKU-22  Dates\u{fffd}box     10      -0.250      -2.500
------  -----------  ---  ----------  ----------
Total                 12                   0.500
";
        assert_eq!(receipt.to_text(), expect);
    }

    #[test]
    fn html_escapes_every_value() {
        let mut receipt_input = input(
            "EUR",
            vec![line(
                "<b>",
                "</script><script>alert('x')</script> & \"q\"\u{7}",
                1,
                5,
            )],
        );
        receipt_input.store_name = "Ben & Jerry's <Store>".to_owned();
        let html = Receipt::new(receipt_input).expect("valid").to_html();
        assert!(html.starts_with("<!DOCTYPE html>\n"), "{html}");
        assert!(html.ends_with("</html>\n"), "{html}");
        assert!(
            html.contains("<dd>Ben &amp; Jerry&#39;s &lt;Store&gt;</dd>"),
            "{html}"
        );
        assert!(html.contains("<td>&lt;b&gt;</td>"), "{html}");
        assert!(
            html.contains(
                "<td>&lt;/script&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;\u{fffd}</td>"
            ),
            "{html}"
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains('\u{7}'), "{html}");
        assert!(html.contains("<td class=\"num\">0.05 EUR</td>"), "{html}");
        assert!(
            html.contains("<time datetime=\"2026-11-26T14:05:00+09:00\">"),
            "{html}"
        );
    }

    #[test]
    fn json_escapes_hostile_strings() {
        let mut out = String::new();
        json_string_into(&mut out, "a\"b\\c\n\u{1}</script>&\u{2028}\u{7f}é");
        assert_eq!(
            out,
            r#""a\"b\\c\n\u0001\u003c/script\u003e\u0026\u2028\u007fé""#
        );
    }
}
