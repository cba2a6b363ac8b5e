//! The contract is documented: every service, RPC, message, field, oneof, enum and enum
//! value of `proto/pickline/v1` has a comment, and the conventions hold.

use std::collections::HashSet;

use pickline_sidecar::pb::FILE_DESCRIPTOR_SET;
use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

// Field numbers of FileDescriptorProto / DescriptorProto / ... in descriptor.proto,
// which is how SourceCodeInfo paths address elements.
const FILE_MESSAGE: i32 = 4;
const FILE_ENUM: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED: i32 = 3;
const MESSAGE_ENUM: i32 = 4;
const MESSAGE_ONEOF: i32 = 8;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

fn pickline_files() -> Vec<FileDescriptorProto> {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .unwrap()
        .file
        .into_iter()
        .filter(|f| f.package() == "pickline.v1")
        .collect()
}

struct Check<'a> {
    documented: HashSet<Vec<i32>>,
    file: &'a str,
    missing: Vec<String>,
}

impl Check<'_> {
    fn element(&mut self, path: &[i32], what: String) {
        if !self.documented.contains(path) {
            self.missing.push(format!("{}: {what}", self.file));
        }
    }

    fn enumeration(&mut self, path: &[i32], e: &EnumDescriptorProto) {
        self.element(path, format!("enum {}", e.name()));
        for (i, v) in e.value.iter().enumerate() {
            let p = [path, &[ENUM_VALUE, i as i32]].concat();
            self.element(&p, format!("enum value {}", v.name()));
        }
    }

    fn message(&mut self, path: &[i32], m: &DescriptorProto) {
        self.element(path, format!("message {}", m.name()));
        for (i, f) in m.field.iter().enumerate() {
            let p = [path, &[MESSAGE_FIELD, i as i32]].concat();
            self.element(&p, format!("field {}.{}", m.name(), f.name()));
        }
        for (i, o) in m.oneof_decl.iter().enumerate() {
            let p = [path, &[MESSAGE_ONEOF, i as i32]].concat();
            self.element(&p, format!("oneof {}.{}", m.name(), o.name()));
        }
        for (i, nested) in m.nested_type.iter().enumerate() {
            self.message(&[path, &[MESSAGE_NESTED, i as i32]].concat(), nested);
        }
        for (i, e) in m.enum_type.iter().enumerate() {
            self.enumeration(&[path, &[MESSAGE_ENUM, i as i32]].concat(), e);
        }
    }
}

#[test]
fn every_element_of_the_contract_has_a_comment() {
    let mut missing = Vec::new();
    for file in pickline_files() {
        let documented = file
            .source_code_info
            .as_ref()
            .expect("protox keeps source info")
            .location
            .iter()
            .filter(|l| !l.leading_comments().trim().is_empty())
            .map(|l| l.path.clone())
            .collect();
        let mut check = Check {
            documented,
            file: file.name(),
            missing: Vec::new(),
        };
        for (i, m) in file.message_type.iter().enumerate() {
            check.message(&[FILE_MESSAGE, i as i32], m);
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            check.enumeration(&[FILE_ENUM, i as i32], e);
        }
        for (i, s) in file.service.iter().enumerate() {
            check.element(&[FILE_SERVICE, i as i32], format!("service {}", s.name()));
            for (j, rpc) in s.method.iter().enumerate() {
                let p = [FILE_SERVICE, i as i32, SERVICE_METHOD, j as i32];
                check.element(&p, format!("rpc {}.{}", s.name(), rpc.name()));
            }
        }
        missing.extend(check.missing);
    }
    assert!(missing.is_empty(), "undocumented:\n{}", missing.join("\n"));
}

/// Every request message of a mutating RPC has an `idempotency_key` (read-only RPCs and
/// batches whose items carry their own key are listed).
#[test]
fn every_mutation_carries_an_idempotency_key() {
    const READ_ONLY_OR_PER_ITEM: &[&str] = &[
        "GetStore",
        "ListStores",
        "GetAvailability",
        "GetSkuAvailability",
        "ListStoreAvailability",
        "NearbyAvailability",
        "ListSlots",
        "GetOrder",
        "ListOrders",
        "Subscribe",
        "Ping",
        "Stats",
        "BatchHold",
        // Intake: reads, and mutations idempotent by their content (a delivery by its
        // channel, account, order id and version; a dead letter by its id).
        "Submit",
        "ListDeadLetters",
        "GetDeadLetter",
        "ReplayDeadLetter",
        "DiscardDeadLetter",
        "GetIntakeHealth",
        // Admin: expiring due holds again expires nothing new.
        "ExpireHolds",
    ];
    let files = pickline_files();
    let messages: Vec<&DescriptorProto> = files.iter().flat_map(|f| &f.message_type).collect();
    for file in &files {
        for service in &file.service {
            for rpc in &service.method {
                if READ_ONLY_OR_PER_ITEM.contains(&rpc.name()) {
                    continue;
                }
                let input = rpc.input_type().trim_start_matches(".pickline.v1.");
                let message = messages.iter().find(|m| m.name() == input).unwrap();
                assert!(
                    message.field.iter().any(|f| f.name() == "idempotency_key"),
                    "{}.{} request {input} has no idempotency_key",
                    service.name(),
                    rpc.name()
                );
            }
        }
    }
}

/// Time fields are int64 and named `*_ms`; no float money.
#[test]
fn times_are_int64_milliseconds() {
    use prost_types::field_descriptor_proto::Type;
    for file in pickline_files() {
        let mut stack: Vec<&DescriptorProto> = file.message_type.iter().collect();
        while let Some(m) = stack.pop() {
            stack.extend(&m.nested_type);
            for f in &m.field {
                if f.name().ends_with("_ms") {
                    assert_eq!(
                        f.r#type(),
                        Type::Int64,
                        "{}.{} should be int64",
                        m.name(),
                        f.name()
                    );
                }
                if f.name().contains("price") || f.name().contains("amount") {
                    assert_eq!(
                        f.r#type(),
                        Type::Int64,
                        "{}.{}: money is int64 minor units",
                        m.name(),
                        f.name()
                    );
                }
            }
        }
    }
}
