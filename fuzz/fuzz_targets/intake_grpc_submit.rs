//! Arbitrary bytes as a gRPC `IntakeService.Submit` request: the protobuf decoding, the
//! request's checks (channel, account, body size, headers kept) and the intake adapter and
//! rules of the channel it names never panic; a delivery that passes the checks keeps its
//! body byte for byte and no credential header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pickline_sidecar::intake::{self, IntakeConfig, Payload, Verdict, grpc_svc};
use pickline_sidecar::pb::SubmitRequest;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = SubmitRequest::decode(data) else {
        return;
    };
    let body = req.body.clone();
    let Ok(d) = grpc_svc::delivery(req) else {
        return;
    };
    assert_eq!(d.body, body);
    assert!(d.headers.iter().all(|(k, _)| k != "authorization"));
    assert!(d.headers.len() <= intake::journal::HEADERS_MAX);
    let payload = Payload {
        body: &d.body,
        related: &[],
    };
    if let Verdict::Rejected { reasons, .. } =
        intake::evaluate(d.channel, &d.account, payload, &IntakeConfig::default())
    {
        assert!(!reasons.is_empty());
    }
});
