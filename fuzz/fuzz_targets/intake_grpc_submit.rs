//! Arbitrary bytes as a gRPC `IntakeService.Submit` request: the protobuf decoding, the
//! request's checks (channel, account, body size, headers kept) and the intake adapter and
//! rules of the channel it names (or the canonical order's checks, when the request
//! carries one) never panic; a delivery that passes the checks keeps its body byte for
//! byte (a canonical order: its own encoding) and no credential header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pickline_sidecar::intake::{self, Format, IntakeConfig, Verdict, grpc_svc};
use pickline_sidecar::pb::SubmitRequest;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = SubmitRequest::decode(data) else {
        return;
    };
    let body = match &req.order {
        Some(order) => order.encode_to_vec(),
        None => req.body.clone(),
    };
    let canonical = req.order.is_some();
    let Ok(d) = grpc_svc::delivery(req) else {
        return;
    };
    assert_eq!(d.body, body);
    assert_eq!(d.format == Format::Canonical, canonical);
    assert!(d.headers.iter().all(|(k, _)| k != "authorization"));
    assert!(d.headers.len() <= intake::journal::HEADERS_MAX);
    if let Verdict::Rejected { reasons, .. } = intake::evaluate_as(
        d.format,
        d.channel,
        &d.account,
        &d.body,
        &IntakeConfig::default(),
    ) {
        assert!(!reasons.is_empty());
    }
});
