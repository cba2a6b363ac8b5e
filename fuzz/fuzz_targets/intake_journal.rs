//! Arbitrary bytes as an intake journal record of every kind and as a journal snapshot:
//! decoding never panics, and whatever decodes re-encodes to the very same bytes (so a
//! record read back is the record that was written).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pickline_sidecar::intake::journal::{JournalRecord, JournalState};

fuzz_target!(|data: &[u8]| {
    let (kind, payload) = match data.split_first() {
        Some((k, rest)) => (*k, rest),
        None => (0, data),
    };
    for kind in [kind, 1, 2, 3, 4, 5] {
        if let Ok(record) = JournalRecord::decode(kind, payload) {
            assert_eq!(record.kind(), kind);
            let mut again = Vec::new();
            record.encode(&mut again);
            assert_eq!(JournalRecord::decode(kind, &again).as_ref(), Ok(&record));
        }
    }
    if let Ok(state) = JournalState::decode(data) {
        assert_eq!(JournalState::decode(&state.encode()), Ok(state));
    }
});
