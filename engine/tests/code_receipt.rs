//! E-receipt renderings, checked with an independent JSON parser.

use pickline_engine::receipt::{Currency, Receipt, ReceiptInput, ReceiptLine, ReceiptNumber};
use proptest::prelude::*;
use serde_json::Value;

fn receipt(store_name: &str, description: &str, currency: &str, prices: &[(u32, i64)]) -> Receipt {
    let lines = prices
        .iter()
        .enumerate()
        .map(|(index, &(qty, unit_price_minor))| ReceiptLine {
            sku: format!("SKU-{index}"),
            description: description.to_owned(),
            qty,
            unit_price_minor,
        })
        .collect();
    Receipt::new(ReceiptInput {
        receipt_number: ReceiptNumber::new("NYC-5", 42).expect("valid store id"),
        order_id: "ord-9".to_owned(),
        channel_order_id: "#1001".to_owned(),
        store_name: store_name.to_owned(),
        store_time_zone: "America/New_York".to_owned(),
        collected_at_ms: 1_795_669_500_000,
        currency: Currency::iso(currency).expect("known currency"),
        lines,
    })
    .expect("valid receipt")
}

/// Renders `receipt` as JSON and parses it back with serde_json.
fn parse_json(receipt: &Receipt) -> Value {
    let json = receipt.to_json();
    serde_json::from_str(&json).unwrap_or_else(|error| panic!("{error}: {json}"))
}

const HOSTILE: &str = "\"quoted\" back\\slash \u{0}\u{1}\u{1f}\n\r\t\u{8}\u{c} </script><!-- & \u{2028}\u{2029} \u{7f} 日本 🙂";

#[test]
fn json_survives_hostile_strings() {
    let receipt = receipt(HOSTILE, HOSTILE, "USD", &[(2, 1999), (1, -500)]);
    let json = receipt.to_json();
    assert!(!json.contains("</script"), "{json}");
    assert!(!json.contains('<'), "{json}");
    assert!(
        !json.bytes().any(|b| b < 0x20),
        "raw control byte in {json}"
    );
    let value = parse_json(&receipt);
    assert_eq!(value["store_name"], HOSTILE);
    assert_eq!(value["lines"][0]["description"], HOSTILE);
    assert_eq!(value["format"], "pickline.receipt.v1");
    assert_eq!(value["receipt_number"], "R-NYC-5-000042");
    assert_eq!(value["channel_order_id"], "#1001");
    assert_eq!(value["time_zone"], "America/New_York");
    assert_eq!(value["collected_at_ms"], 1_795_669_500_000i64);
    assert_eq!(value["collected_at_local"], "2026-11-26T00:05:00-05:00");
    assert_eq!(value["currency"]["code"], "USD");
    assert_eq!(value["currency"]["exponent"], 2);
    assert_eq!(value["lines"][0]["qty"], 2);
    assert_eq!(value["lines"][0]["unit_price_minor"], 1999);
    assert_eq!(value["lines"][0]["unit_price"], "19.99");
    assert_eq!(value["lines"][0]["line_total_minor"], 3998);
    assert_eq!(value["lines"][0]["line_total"], "39.98");
    assert_eq!(value["lines"][1]["line_total"], "-5.00");
    assert_eq!(value["total_qty"], 3);
    assert_eq!(value["total_minor"], 3498);
    assert_eq!(value["total"], "34.98");
}

#[test]
fn json_money_follows_the_exponent() {
    let cases: &[(&str, i64, &str)] = &[
        ("JPY", 1500, "1500"),
        ("JPY", -1500, "-1500"),
        ("EUR", 5, "0.05"),
        ("KWD", -1, "-0.001"),
        ("KWD", 1_234_567, "1234.567"),
        ("USD", i64::MIN, "-92233720368547758.08"),
    ];
    for &(currency, amount, expect) in cases {
        let value = parse_json(&receipt("S", "d", currency, &[(1, amount)]));
        assert_eq!(value["total"], expect, "{currency} {amount}");
        assert_eq!(value["total_minor"], amount, "{currency} {amount}");
    }
}

#[test]
fn text_and_html_neutralize_hostile_strings() {
    let receipt = receipt(HOSTILE, HOSTILE, "EUR", &[(1, 100)]);
    let text = receipt.to_text();
    // Only line feeds that end lines: no other control characters survive.
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    assert!(text.lines().all(|line| !line.ends_with(' ')), "{text:?}");
    let html = receipt.to_html();
    assert!(!html.contains("</script"), "{html}");
    assert!(!html.contains("<!--"), "{html}");
    assert!(!html.contains("\"quoted\""), "{html}");
    assert!(html.contains("&quot;quoted&quot; back\\slash"), "{html}");
    assert!(html.contains("&lt;/script&gt;&lt;!-- &amp;"), "{html}");
    assert!(
        !html.chars().any(|c| c.is_control() && c != '\n'),
        "{html:?}"
    );
}

proptest! {
    #[test]
    fn json_round_trips_any_text(store in "\\PC{1,40}", description in any::<String>().prop_filter("bounded", |s| s.len() <= 256)) {
        let receipt = receipt(&store, &description, "JPY", &[(3, 7)]);
        let value = parse_json(&receipt);
        prop_assert_eq!(value["store_name"].as_str(), Some(store.as_str()));
        prop_assert_eq!(value["lines"][0]["description"].as_str(), Some(description.as_str()));
        prop_assert_eq!(value["total_minor"].as_i64(), Some(21));
    }

    #[test]
    fn totals_are_exact_or_an_error(prices in proptest::collection::vec((1u32..=u32::MAX, any::<i64>()), 1..6)) {
        let lines: Vec<ReceiptLine> = prices
            .iter()
            .map(|&(qty, unit_price_minor)| ReceiptLine {
                sku: "S".to_owned(),
                description: String::new(),
                qty,
                unit_price_minor,
            })
            .collect();
        let expect: i128 = prices.iter().map(|&(qty, price)| i128::from(qty) * i128::from(price)).sum();
        let line_fits = prices.iter().all(|&(qty, price)| i64::try_from(i128::from(qty) * i128::from(price)).is_ok());
        let built = Receipt::new(ReceiptInput {
            receipt_number: ReceiptNumber::new("S", 1).expect("valid"),
            order_id: "o".to_owned(),
            channel_order_id: "c".to_owned(),
            store_name: "s".to_owned(),
            store_time_zone: "UTC".to_owned(),
            collected_at_ms: 0,
            currency: Currency::iso("USD").expect("known"),
            lines,
        });
        match built {
            Ok(receipt) => prop_assert_eq!(i128::from(receipt.total_minor()), expect),
            // An error only when a line or a running sum really leaves i64.
            Err(_) => {
                let running_sums_fit = prices
                    .iter()
                    .scan(0i128, |sum, &(qty, price)| {
                        *sum += i128::from(qty) * i128::from(price);
                        Some(i64::try_from(*sum).is_ok())
                    })
                    .all(|fits| fits);
                prop_assert!(!(line_fits && running_sums_fit));
            }
        }
    }
}
