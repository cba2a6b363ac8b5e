//! Message templates (minijinja) per kind and locale, and SMS length rules.
//!
//! A template is one file per (locale, kind), `<locale>/<kind>.j2`, defining four blocks:
//! `subject`, `text` (email plain text), `html` (email HTML; escape with `|e`) and `sms`.
//! Lookup walks the order's locale chain (`de-DE` -> `de` -> the default locale, `en`),
//! and for each locale tries the operator's `template_dir` first, then the built-in
//! templates compiled into the binary: operators override one kind in one language by
//! dropping one file, without recompiling. Templates are read when first used
//! (restart to pick up edits; `pickline notify preview` always reads them fresh).
//!
//! The context is the message's JSON ([`super::plan::base_context`]): `order_id`,
//! `channel_order_id`, `customer_name`, `store.{id,name,instructions,time_zone}`,
//! `lines[].{sku,description,qty}`, `total`, `pickup_code`, `qr_payload`,
//! `ready_estimate`, `pickup_slot`, `expires_at` (store-local `YYYY-MM-DD HH:MM`),
//! `receipt_number`, `receipt_text`, `receipt_html`. An HTML block may show the QR
//! code with `<img src="cid:qr">` (the email carries it inline).
//!
//! SMS: a text of GSM-7 characters only is sent as GSM-7 (160 per single message, 153 per
//! part of a concatenated one; `^{}\[~]|€` count twice); any other character makes
//! the whole text UCS-2 (70 UTF-16 units, 67 per part). A text longer than
//! `sms.segments_max` segments is cut to fit, ending in `...`/`…`.

use std::path::{Path, PathBuf};

use minijinja::Environment;
use serde_json::Value;
use thiserror::Error;

use super::Kind;

macro_rules! builtin {
    ($($loc:literal / $kind:literal),* $(,)?) => {
        &[$((concat!($loc, "/", $kind, ".j2"), include_str!(concat!("templates/", $loc, "/", $kind, ".j2")))),*]
    };
}

/// Built-in templates: (name, source).
const BUILTIN: &[(&str, &str)] = builtin!(
    "en" / "confirmation",
    "en" / "ready",
    "en" / "reminder",
    "en" / "expired",
    "en" / "no_show",
    "en" / "cancelled",
    "en" / "receipt",
    "de" / "confirmation",
    "de" / "ready",
    "de" / "reminder",
    "de" / "expired",
    "de" / "no_show",
    "de" / "cancelled",
    "de" / "receipt",
);

/// Why a message could not be rendered.
#[derive(Debug, Error)]
pub enum RenderError {
    /// No template for the kind in any locale of the chain.
    #[error("no template for {kind} in any of {chain:?}")]
    NoTemplate {
        /// The kind.
        kind: &'static str,
        /// The locales tried.
        chain: Vec<String>,
    },
    /// The template failed (syntax, a missing block, a filter error).
    #[error("template {name}: {source}")]
    Template {
        /// Its name.
        name: String,
        /// Why.
        source: minijinja::Error,
    },
}

/// A rendered message in every form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The template used (`de/ready.j2`).
    pub template: String,
    /// Email subject.
    pub subject: String,
    /// Email plain text.
    pub text: String,
    /// Email HTML.
    pub html: String,
    /// SMS text, within the segment bound.
    pub sms: String,
    /// How the SMS is encoded.
    pub sms_encoding: SmsEncoding,
    /// Segments the SMS costs.
    pub sms_segments: u32,
}

/// The templates.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    default_locale: String,
    sms_segments_max: u32,
}

impl Renderer {
    /// Templates from `dir` (if not empty) over the built-in ones.
    pub fn new(dir: &Path, default_locale: &str, sms_segments_max: u32) -> Renderer {
        let mut env = Environment::new();
        let dir: Option<PathBuf> = (!dir.as_os_str().is_empty()).then(|| dir.to_owned());
        env.set_loader(move |name: &str| {
            if let Some(dir) = &dir {
                // Names are built from a validated locale and a fixed kind: no `..`.
                match std::fs::read_to_string(dir.join(name)) {
                    Ok(s) => return Ok(Some(s)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            format!("cannot read template {name}: {e}"),
                        ));
                    }
                }
            }
            Ok(BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| (*s).to_owned()))
        });
        Renderer {
            env,
            default_locale: default_locale.to_owned(),
            sms_segments_max,
        }
    }

    /// The locales tried for `locale`, most specific first.
    pub fn chain(&self, locale: &str) -> Vec<String> {
        locale_chain(locale, &self.default_locale)
    }

    /// Renders `kind` for `locale` with `ctx`.
    pub fn render(&self, kind: Kind, locale: &str, ctx: &Value) -> Result<Rendered, RenderError> {
        let chain = self.chain(locale);
        for loc in &chain {
            let name = format!("{loc}/{}.j2", kind.as_str());
            let tmpl = match self.env.get_template(&name) {
                Ok(t) => t,
                Err(e) if e.kind() == minijinja::ErrorKind::TemplateNotFound => continue,
                Err(source) => return Err(RenderError::Template { name, source }),
            };
            let fail = |source| RenderError::Template {
                name: name.clone(),
                source,
            };
            // The blocks alone: the template's own output (outside blocks) is discarded.
            let mut captured = tmpl
                .render_captured_to(ctx, std::io::sink())
                .map_err(fail)?;
            let blocks = captured.with_state_mut(|state| {
                ["subject", "text", "html", "sms"]
                    .map(|b| state.render_block(b).map(|s| s.trim().to_owned()))
            });
            let [subject, text, html, sms_full] = blocks;
            let (subject, text, html, sms_full) = (
                subject.map_err(fail)?,
                text.map_err(fail)?,
                html.map_err(fail)?,
                sms_full.map_err(fail)?,
            );
            let sms = fit_sms(&sms_full, self.sms_segments_max);
            let (sms_encoding, sms_segments) = sms_segments(&sms);
            return Ok(Rendered {
                template: name,
                subject: subject.replace(['\r', '\n'], " "),
                text,
                html,
                sms,
                sms_encoding,
                sms_segments,
            });
        }
        Err(RenderError::NoTemplate {
            kind: kind.as_str(),
            chain,
        })
    }
}

/// `de-DE` -> `[de-DE, de, <default>]` (underscores read as hyphens; duplicates dropped).
pub fn locale_chain(locale: &str, default: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let tag = locale.replace('_', "-");
    let parts: Vec<&str> = tag.split('-').filter(|p| !p.is_empty()).collect();
    for n in (1..=parts.len()).rev() {
        out.push(parts[..n].join("-"));
    }
    out.push(default.to_owned());
    if default.contains('-') {
        out.push(default.split('-').next().unwrap_or(default).to_owned());
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|l| super::config::valid_locale(l) && seen.insert(l.to_ascii_lowercase()));
    out
}

/// How an SMS is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmsEncoding {
    /// GSM 03.38 7-bit default alphabet (with its extension table).
    Gsm7,
    /// UTF-16 (UCS-2 on the air).
    Ucs2,
}

impl SmsEncoding {
    /// Its name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SmsEncoding::Gsm7 => "GSM-7",
            SmsEncoding::Ucs2 => "UCS-2",
        }
    }
}

/// The GSM 03.38 basic character set.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table (each costs an escape plus the character: two septets).
const GSM7_EXT: &str = "\x0c^{}\\[~]|€";

/// Septets of `s` in GSM-7, or `None` if a character is not in the alphabet.
fn gsm7_septets(s: &str) -> Option<usize> {
    s.chars().try_fold(0usize, |n, c| {
        if GSM7_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM7_EXT.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    })
}

/// The encoding and segment count of `s`.
pub fn sms_segments(s: &str) -> (SmsEncoding, u32) {
    let (enc, units, single, part) = match gsm7_septets(s) {
        Some(n) => (SmsEncoding::Gsm7, n, 160, 153),
        None => (SmsEncoding::Ucs2, s.encode_utf16().count(), 70, 67),
    };
    let segs = if units <= single {
        1
    } else {
        units.div_ceil(part)
    };
    (enc, segs as u32)
}

/// `s`, cut (at a character boundary, ending in an ellipsis) to at most `max` segments.
pub fn fit_sms(s: &str, max: u32) -> String {
    if sms_segments(s).1 <= max {
        return s.to_owned();
    }
    let ellipsis = if gsm7_septets(s).is_some() {
        "..."
    } else {
        "…"
    };
    let mut chars: Vec<char> = s.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let cut: String = chars.iter().collect::<String>().trim_end().to_owned() + ellipsis;
        if sms_segments(&cut).1 <= max {
            return cut;
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn segments_gsm7_and_ucs2() {
        assert_eq!(sms_segments(&"a".repeat(160)), (SmsEncoding::Gsm7, 1));
        assert_eq!(sms_segments(&"a".repeat(161)), (SmsEncoding::Gsm7, 2));
        assert_eq!(sms_segments(&"a".repeat(306)), (SmsEncoding::Gsm7, 2));
        assert_eq!(sms_segments(&"a".repeat(307)), (SmsEncoding::Gsm7, 3));
        // Extension characters count twice: 80 euro signs fill one message.
        assert_eq!(sms_segments(&"€".repeat(80)), (SmsEncoding::Gsm7, 1));
        assert_eq!(sms_segments(&"€".repeat(81)), (SmsEncoding::Gsm7, 2));
        // German umlauts are GSM-7; a Polish ł is not.
        assert_eq!(sms_segments("Grüße aus München").0, SmsEncoding::Gsm7);
        assert_eq!(sms_segments(&"ł".repeat(70)), (SmsEncoding::Ucs2, 1));
        assert_eq!(sms_segments(&"ł".repeat(71)), (SmsEncoding::Ucs2, 2));
        // An emoji is two UTF-16 units.
        assert_eq!(sms_segments(&"😀".repeat(35)), (SmsEncoding::Ucs2, 1));
        assert_eq!(sms_segments(&"😀".repeat(36)), (SmsEncoding::Ucs2, 2));
        let cut = fit_sms(&"a".repeat(1000), 2);
        assert_eq!(sms_segments(&cut), (SmsEncoding::Gsm7, 2));
        assert!(cut.ends_with("...") && cut.len() == 306);
        let cut = fit_sms(&"ł".repeat(500), 1);
        assert_eq!(sms_segments(&cut), (SmsEncoding::Ucs2, 1));
    }

    #[test]
    fn locale_fallback() {
        assert_eq!(locale_chain("de-DE", "en"), ["de-DE", "de", "en"]);
        assert_eq!(locale_chain("de_AT", "en"), ["de-AT", "de", "en"]);
        assert_eq!(locale_chain("en", "en"), ["en"]);
        assert_eq!(locale_chain("../x", "en"), ["en"]);
        let r = Renderer::new(Path::new(""), "en", 3);
        let ctx = json!({"order_id": "O1-2", "pickup_code": "ABCDE-FGHJK",
            "store": {"name": "Mitte", "instructions": "Desk B"}, "lines": []});
        let de = r.render(Kind::Ready, "de-DE", &ctx).unwrap();
        assert_eq!(de.template, "de/ready.j2");
        assert!(de.sms.contains("ABCDE-FGHJK") && de.html.contains("cid:qr"));
        let fr = r.render(Kind::Ready, "fr-FR", &ctx).unwrap();
        assert_eq!(fr.template, "en/ready.j2");
        // Every built-in template renders every block for every kind.
        for kind in Kind::ALL {
            for loc in ["en", "de"] {
                let m = r.render(kind, loc, &ctx).unwrap();
                assert!(!m.subject.is_empty() && !m.text.is_empty() && !m.sms.is_empty());
                assert!(m.html.contains("<html"), "{}", m.template);
            }
        }
    }

    #[test]
    fn operator_dir_overrides_one_template() {
        let dir = std::env::temp_dir().join(format!("pickline-tmpl-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("de")).unwrap();
        std::fs::write(
            dir.join("de/ready.j2"),
            "{% block subject %}Abholbereit {{ order_id }}{% endblock %}{% block text %}t{% endblock %}{% block html %}<html>h</html>{% endblock %}{% block sms %}Code {{ pickup_code }}{% endblock %}",
        )
        .unwrap();
        let r = Renderer::new(&dir, "en", 3);
        let ctx = json!({"order_id": "O1-2", "pickup_code": "X", "store": {}, "lines": []});
        assert_eq!(
            r.render(Kind::Ready, "de-DE", &ctx).unwrap().subject,
            "Abholbereit O1-2"
        );
        // Other kinds still come from the built-in templates.
        assert_eq!(
            r.render(Kind::Reminder, "de", &ctx).unwrap().template,
            "de/reminder.j2"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
