//! Pickup codes, QR payloads and e-receipts.
