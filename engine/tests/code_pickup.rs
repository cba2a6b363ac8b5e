//! Pickup codes, attempt limiting and QR payloads, driven through the public API.

use pickline_engine::pickup_code::{
    AttemptState, CODE_BITS, CODE_SYMBOLS, CodeAttempts, CodeParseError, MAX_WRONG_ATTEMPTS,
    OverrideOutcome, PickupCode, QrPayload, StaffId, VerifyOutcome,
};
use proptest::prelude::*;
use std::collections::HashSet;

fn code(value: u64) -> PickupCode {
    PickupCode::from_value(value).expect("value below 2^50")
}

fn staff(id: &str) -> StaffId {
    StaffId::new(id).expect("valid staff id")
}

#[test]
fn code_has_at_least_forty_bits() {
    const { assert!(CODE_BITS >= 40) };
    assert_eq!(CODE_SYMBOLS * 5, CODE_BITS as usize);
    // Every kept entropy bit changes the code on its own, so the 50 single-bit codes and
    // the zero code are 51 distinct codes: no kept bit is lost by the encoding.
    let mut seen = HashSet::new();
    seen.insert(PickupCode::from_entropy([0; 8]).to_string());
    for bit in (64 - CODE_BITS)..64 {
        let entropy = (1u64 << bit).to_be_bytes();
        assert!(
            seen.insert(PickupCode::from_entropy(entropy).to_string()),
            "bit {bit}"
        );
    }
    assert_eq!(seen.len(), CODE_BITS as usize + 1);
}

#[test]
fn lockout_after_exactly_five_wrong_codes_and_override() {
    let issued = code(0x1234_5678_9abc);
    let wrong = code(0x1234_5678_9abd);
    let mut attempts = CodeAttempts::new();
    assert_eq!(MAX_WRONG_ATTEMPTS, 5);
    for attempts_left in (1..MAX_WRONG_ATTEMPTS).rev() {
        assert_eq!(
            attempts.verify(&issued, &wrong),
            VerifyOutcome::Wrong { attempts_left }
        );
    }
    assert_eq!(attempts.state(), AttemptState::Open { wrong_attempts: 4 });
    assert_eq!(
        attempts.verify(&issued, &wrong),
        VerifyOutcome::WrongNowLocked
    );
    assert_eq!(attempts.state(), AttemptState::Locked);

    // While locked even the right code is rejected, typed or parsed, and malformed input
    // is reported as locked rather than parsed.
    assert_eq!(attempts.verify(&issued, &issued), VerifyOutcome::Locked);
    assert_eq!(
        attempts.verify_input(&issued, &issued.to_string()),
        VerifyOutcome::Locked
    );
    assert_eq!(attempts.verify_input(&issued, "???"), VerifyOutcome::Locked);
    assert_eq!(attempts.state(), AttemptState::Locked);
    assert_eq!(attempts.override_count(), 0);

    let outcome = attempts.staff_override(staff("emp-7"), 1_795_669_500_000);
    let OverrideOutcome::Unlocked(record) = outcome else {
        panic!("expected unlock, got {outcome:?}");
    };
    assert_eq!(record.staff_id.as_str(), "emp-7");
    assert_eq!(record.at_ms, 1_795_669_500_000);
    assert_eq!(record.sequence, 1);
    assert_eq!(attempts.last_override(), Some(&record));
    assert_eq!(attempts.state(), AttemptState::Open { wrong_attempts: 0 });

    // A second override while open changes nothing.
    assert_eq!(
        attempts.staff_override(staff("emp-8"), 1),
        OverrideOutcome::NotLocked
    );
    assert_eq!(attempts.override_count(), 1);

    // A full new allowance after the override.
    assert_eq!(
        attempts.verify(&issued, &wrong),
        VerifyOutcome::Wrong {
            attempts_left: MAX_WRONG_ATTEMPTS - 1
        }
    );
    let typed = issued.to_string().to_lowercase().replace('-', " ");
    assert_eq!(
        attempts.verify_input(&issued, &typed),
        VerifyOutcome::Accepted
    );
    assert_eq!(attempts.state(), AttemptState::Accepted);
    assert_eq!(
        attempts.verify(&issued, &issued),
        VerifyOutcome::AlreadyAccepted
    );
    assert_eq!(
        attempts.staff_override(staff("emp-9"), 2),
        OverrideOutcome::NotLocked
    );
}

#[test]
fn malformed_input_does_not_count_as_a_wrong_attempt() {
    let issued = code(42);
    let mut attempts = CodeAttempts::new();
    for _ in 0..(2 * MAX_WRONG_ATTEMPTS) {
        assert_eq!(
            attempts.verify_input(&issued, "0000U-00000"),
            VerifyOutcome::Malformed(CodeParseError::InvalidCharacter {
                character: 'U',
                position: 4
            })
        );
    }
    assert_eq!(attempts.state(), AttemptState::Open { wrong_attempts: 0 });
}

/// A naive model of the attempt policy, to compare against [`CodeAttempts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Open(u32),
    Locked,
    Accepted,
}

#[derive(Debug, Clone)]
enum Op {
    Right,
    Wrong,
    Malformed,
    Override,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Right),
        6 => Just(Op::Wrong),
        1 => Just(Op::Malformed),
        2 => Just(Op::Override),
    ]
}

proptest! {
    #[test]
    fn display_parse_round_trip(entropy in any::<[u8; 8]>()) {
        let issued = PickupCode::from_entropy(entropy);
        let shown = issued.to_string();
        prop_assert_eq!(shown.len(), CODE_SYMBOLS + 1);
        prop_assert_eq!(shown.as_bytes()[5], b'-');
        prop_assert!(!shown.contains(['I', 'L', 'O', 'U']));
        prop_assert_eq!(PickupCode::parse(&shown), Ok(issued));
        prop_assert_eq!(PickupCode::parse(&issued.to_compact()), Ok(issued));
        prop_assert_eq!(PickupCode::from_value(issued.value()), Ok(issued));
    }

    #[test]
    fn confusables_case_and_separators_are_normalized(
        entropy in any::<[u8; 8]>(),
        choices in proptest::collection::vec(0u8..4, CODE_SYMBOLS),
        separators in proptest::collection::vec(prop_oneof![Just(""), Just("-"), Just(" "), Just(" - ")], CODE_SYMBOLS + 1),
    ) {
        let issued = PickupCode::from_entropy(entropy);
        let mut typed = String::from(separators[0]);
        for ((symbol, choice), separator) in issued.to_compact().chars().zip(&choices).zip(&separators[1..]) {
            let written = match (symbol, choice) {
                ('1', 0) => 'I',
                ('1', 1) => 'i',
                ('1', 2) => 'l',
                ('1', _) => 'L',
                ('0', 0 | 1) => 'O',
                ('0', _) => 'o',
                (other, 0 | 1) => other.to_ascii_lowercase(),
                (other, _) => other,
            };
            typed.push(written);
            typed.push_str(separator);
        }
        prop_assert_eq!(PickupCode::parse(&typed), Ok(issued), "typed {:?}", typed);
    }

    #[test]
    fn codes_are_distinct_exactly_when_kept_entropy_is(a in any::<u64>(), b in any::<u64>()) {
        let code_a = PickupCode::from_entropy(a.to_be_bytes());
        let code_b = PickupCode::from_entropy(b.to_be_bytes());
        let kept_equal = a >> (64 - CODE_BITS) == b >> (64 - CODE_BITS);
        prop_assert_eq!(code_a == code_b, kept_equal);
        prop_assert_eq!(code_a.to_string() == code_b.to_string(), kept_equal);
        prop_assert_eq!(code_a.verify(&code_b), kept_equal);
    }

    #[test]
    fn parse_never_panics(input in "\\PC{0,80}") {
        if let Ok(parsed) = PickupCode::parse(&input) {
            // Whatever parsed must print and parse back to itself.
            prop_assert_eq!(PickupCode::parse(&parsed.to_string()), Ok(parsed));
        }
        let _ = QrPayload::parse(&input);
    }

    #[test]
    fn qr_payload_round_trip(
        store in "\\PC{1,16}",
        order in "[a-zA-Z0-9:%/ #-]{1,32}",
        entropy in any::<[u8; 8]>(),
    ) {
        let issued = PickupCode::from_entropy(entropy);
        let payload = QrPayload::new(&store, &order, issued).expect("ids within limits");
        let text = payload.encode();
        prop_assert!(text.starts_with("PICKLINE1:"));
        prop_assert_eq!(text.matches(':').count(), 3);
        prop_assert!(text.is_ascii());
        let parsed = QrPayload::parse(&text).expect("own payload parses");
        prop_assert_eq!(parsed.store_external_id(), store.as_str());
        prop_assert_eq!(parsed.order_id(), order.as_str());
        prop_assert_eq!(parsed.code(), issued);
        prop_assert_eq!(parsed.encode(), text);
    }

    #[test]
    fn attempts_match_a_naive_model(ops in proptest::collection::vec(op(), 0..40)) {
        let issued = code(0xdead_beef);
        let wrong = code(0xdead_beee);
        let mut attempts = CodeAttempts::new();
        let mut model = Model::Open(0);
        let mut overrides = 0u32;
        for (now_ms, op) in (0i64..).zip(&ops) {
            match op {
                Op::Right | Op::Wrong => {
                    let presented = if matches!(op, Op::Right) { issued } else { wrong };
                    let outcome = attempts.verify(&issued, &presented);
                    let (expect, next) = match (model, op) {
                        (Model::Locked, _) => (VerifyOutcome::Locked, Model::Locked),
                        (Model::Accepted, _) => (VerifyOutcome::AlreadyAccepted, Model::Accepted),
                        (Model::Open(_), Op::Right) => (VerifyOutcome::Accepted, Model::Accepted),
                        (Model::Open(n), _) if n + 1 == MAX_WRONG_ATTEMPTS => {
                            (VerifyOutcome::WrongNowLocked, Model::Locked)
                        }
                        (Model::Open(n), _) => (
                            VerifyOutcome::Wrong { attempts_left: MAX_WRONG_ATTEMPTS - n - 1 },
                            Model::Open(n + 1),
                        ),
                    };
                    prop_assert_eq!(outcome, expect);
                    model = next;
                }
                Op::Malformed => {
                    let outcome = attempts.verify_input(&issued, "not a code");
                    match model {
                        Model::Locked => prop_assert_eq!(outcome, VerifyOutcome::Locked),
                        Model::Accepted => prop_assert_eq!(outcome, VerifyOutcome::AlreadyAccepted),
                        Model::Open(_) => prop_assert!(matches!(outcome, VerifyOutcome::Malformed(_))),
                    }
                }
                Op::Override => {
                    let outcome = attempts.staff_override(staff("s"), now_ms);
                    if model == Model::Locked {
                        overrides += 1;
                        let OverrideOutcome::Unlocked(record) = outcome else {
                            return Err(TestCaseError::fail("locked order did not unlock"));
                        };
                        prop_assert_eq!(record.sequence, overrides);
                        prop_assert_eq!(record.at_ms, now_ms);
                        model = Model::Open(0);
                    } else {
                        prop_assert_eq!(outcome, OverrideOutcome::NotLocked);
                    }
                }
            }
            let state = match model {
                Model::Open(wrong_attempts) => AttemptState::Open { wrong_attempts },
                Model::Locked => AttemptState::Locked,
                Model::Accepted => AttemptState::Accepted,
            };
            prop_assert_eq!(attempts.state(), state);
            prop_assert_eq!(attempts.override_count(), overrides);
        }
    }
}
