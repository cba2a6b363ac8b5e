//! A first real call to Pickline from Rust, with tonic: register a store, receive stock,
//! hold, confirm, and read availability.
//!
//! ```sh
//! cargo run --release -p pickline-sidecar -- serve --dev      # prints a token
//! export PICKLINE_TOKEN=pkl_dev_...                           # the printed token
//! cargo run --release -p pickline-sidecar --example quickstart -- http://127.0.0.1:50051
//! ```
//!
//! The client types come from `pickline_sidecar::pb` here; in your own service, generate
//! them from `proto/pickline/v1/*.proto` with `tonic-prost-build`. Every call carries
//! `authorization: Bearer <token>`. `sidecar/tests/quickstart.rs` runs [`run`] against a
//! real server, so this file cannot fall behind the contract.

use pickline_sidecar::pb::{
    self, hold_service_client::HoldServiceClient, inventory_service_client::InventoryServiceClient,
    store_service_client::StoreServiceClient,
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

/// What the quickstart saw: the availability of the held SKU after each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The hold the engine granted.
    pub hold_id: u64,
    /// The confirmed hold's expiry, unix ms.
    pub expires_at_ms: i64,
    /// Units on hand after the receipt.
    pub on_hand: u32,
    /// Units held after the hold.
    pub held: u32,
    /// Available to promise at the end.
    pub atp: u32,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let token = std::env::var("PICKLINE_TOKEN")
        .map_err(|_| "set PICKLINE_TOKEN to the token `pickline serve --dev` printed")?;
    let seen = run(&endpoint, &token).await?;
    println!(
        "hold {} confirmed until {} ms; MUG-350 now on_hand {}, held {}, atp {}",
        seen.hold_id, seen.expires_at_ms, seen.on_hand, seen.held, seen.atp
    );
    Ok(())
}

/// The quickstart against the server at `endpoint` (e.g. `http://127.0.0.1:50051`).
pub async fn run(endpoint: &str, token: &str) -> Result<Seen, Error> {
    let channel = Channel::from_shared(endpoint.to_owned())?.connect().await?;
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
    // Every request carries the token; an interceptor adds it to each one.
    let auth = move |mut req: Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    };
    let mut stores = StoreServiceClient::with_interceptor(channel.clone(), auth.clone());
    let mut inventory = InventoryServiceClient::with_interceptor(channel.clone(), auth.clone());
    let mut holds = HoldServiceClient::with_interceptor(channel, auth);
    // Idempotency keys and POS event ids must be new for each run (a retry with the same
    // key gets the first answer back); the current time makes them so.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();

    // 1. Register a store (UpsertStore creates it or updates it).
    stores
        .upsert_store(pb::UpsertStoreRequest {
            idempotency_key: format!("qs-store-{run_id}"),
            store: Some(pb::StoreIdentity {
                store_id: "BER-01".into(),
                name: "Berlin Mitte".into(),
                location: Some(pb::GeoPoint {
                    latitude_deg: 52.52,
                    longitude_deg: 13.405,
                }),
                time_zone: "Europe/Berlin".into(),
                status: pb::StoreStatus::Open as i32,
                ..Default::default()
            }),
        })
        .await?;

    // 2. Receive 10 mugs, as the store's POS would report them.
    let received = inventory
        .apply_pos_events(pb::ApplyPosEventsRequest {
            idempotency_key: format!("qs-stock-{run_id}"),
            events: vec![pb::PosEvent {
                pos_event_id: format!("qs-recv-{run_id}"),
                store_id: "BER-01".into(),
                sku: "MUG-350".into(),
                occurred_at_ms: run_id as i64,
                change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                    kind: pb::PosDeltaKind::Receive as i32,
                    qty: 10,
                })),
                order_ref: String::new(),
            }],
        })
        .await?
        .into_inner();
    let on_hand = received
        .outcomes
        .first()
        .and_then(|o| o.cell.as_ref())
        .map(|c| c.on_hand)
        .ok_or("ApplyPosEvents answered without the cell")?;

    // 3. Hold 2 of them for a shopper's cart (the store's default hold time).
    let held = holds
        .hold(pb::HoldRequest {
            idempotency_key: format!("qs-cart-{run_id}"),
            store_id: "BER-01".into(),
            lines: vec![pb::Line {
                sku: "MUG-350".into(),
                qty: 2,
            }],
            expiry: None,
        })
        .await?
        .into_inner();
    let hold = match held.outcome {
        Some(pb::hold_response::Outcome::Granted(hold)) => hold,
        Some(pb::hold_response::Outcome::Rejected(why)) => {
            return Err(format!("hold rejected: {why:?}").into());
        }
        None => return Err("Hold answered without an outcome".into()),
    };

    // 4. Checkout completed: confirm the hold. It stays reserved until its expiry (the
    //    end of the pickup window), when the order's pickup or a release ends it sooner.
    let confirmed = holds
        .confirm(pb::ConfirmRequest {
            idempotency_key: format!("qs-confirm-{run_id}"),
            hold_id: hold.hold_id,
        })
        .await?
        .into_inner();
    let expires_at_ms = match confirmed.outcome {
        Some(pb::confirm_response::Outcome::Confirmed(hold)) => hold.expires_at_ms,
        other => return Err(format!("confirm refused: {other:?}").into()),
    };

    // 5. Read availability: ATP = on_hand - held - safety stock.
    let cell = inventory
        .get_availability(pb::GetAvailabilityRequest {
            store_id: "BER-01".into(),
            sku: "MUG-350".into(),
        })
        .await?
        .into_inner()
        .cell
        .ok_or("GetAvailability answered without the cell")?;
    Ok(Seen {
        hold_id: hold.hold_id,
        expires_at_ms,
        on_hand,
        held: cell.held,
        atp: cell.atp,
    })
}
