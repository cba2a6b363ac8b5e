//! Arbitrary bytes through the magento intake adapter, its rules and its signature check:
//! never a panic (`intake_common::run`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pickline_sidecar::intake::Channel;

mod intake_common;

fuzz_target!(|data: &[u8]| intake_common::run(Channel::Magento, data));
