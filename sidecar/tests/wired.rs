//! The RPCs wired to allocation, calendars, slots, nearby search, staff no-shows and
//! re-allocation, end to end over real loopback gRPC.

mod common;

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{
    ADMIN_TOKEN, CHECKOUT_TOKEN, Clients, STAFF_S1_TOKEN, TestServer, clients, with_token,
};
use pickline_sidecar::pb;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

fn key(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{what}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn line(sku: &str, qty: u32) -> pb::Line {
    pb::Line {
        sku: sku.into(),
        qty,
    }
}

fn point(lat: f64, lon: f64) -> Option<pb::GeoPoint> {
    Some(pb::GeoPoint {
        latitude_deg: lat,
        longitude_deg: lon,
    })
}

/// Creates an open store at `(lat, lon)` in UTC with `qty` units of MUG.
async fn store_with_mugs(c: &mut Clients, id: &str, lat: f64, lon: f64, qty: u32) {
    c.stores
        .upsert_store(with_token(
            pb::UpsertStoreRequest {
                idempotency_key: key("store"),
                store: Some(pb::StoreIdentity {
                    store_id: id.into(),
                    name: format!("Store {id}"),
                    location: point(lat, lon),
                    time_zone: "UTC".into(),
                    status: pb::StoreStatus::Open as i32,
                    ..Default::default()
                }),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    if qty == 0 {
        return;
    }
    let applied = c
        .inventory
        .apply_pos_events(with_token(
            pb::ApplyPosEventsRequest {
                idempotency_key: key("pos-batch"),
                events: vec![pb::PosEvent {
                    pos_event_id: key("pos"),
                    store_id: id.into(),
                    sku: "MUG".into(),
                    occurred_at_ms: 1,
                    change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                        kind: pb::PosDeltaKind::Receive as i32,
                        qty,
                    })),
                    order_ref: String::new(),
                }],
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.outcomes[0].result(), pb::PosEventResult::Applied);
}

async fn availability(c: &mut Clients, store: &str) -> pb::Availability {
    c.inventory
        .get_availability(with_token(
            pb::GetAvailabilityRequest {
                store_id: store.into(),
                sku: "MUG".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .cell
        .unwrap()
}

async fn allocate(c: &mut Clients, req: pb::AllocateRequest) -> pb::AllocateResponse {
    c.holds
        .allocate(with_token(req, CHECKOUT_TOKEN))
        .await
        .unwrap()
        .into_inner()
}

fn allocate_near(key: &str, qty: u32) -> pb::AllocateRequest {
    pb::AllocateRequest {
        idempotency_key: key.into(),
        origin: Some(pb::allocate_request::Origin::Position(pb::GeoPoint {
            latitude_deg: 52.5200,
            longitude_deg: 13.4000,
        })),
        lines: vec![line("MUG", qty)],
        max_distance_m: 50_000,
        ..Default::default()
    }
}

fn allocated(r: &pb::AllocateResponse) -> &pb::Allocation {
    match &r.outcome {
        Some(pb::allocate_response::Outcome::Allocated(a)) => a,
        other => panic!("expected an allocation, got {other:?}"),
    }
}

fn field_violation(status: &Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations[0]
        .field
        .clone()
}

#[tokio::test]
async fn allocate_picks_the_nearest_store_with_stock_then_falls_back_to_the_next() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    // From the customer at (52.52, 13.40): NEAR ~0.7 km, MID ~3.5 km, FAR ~14 km.
    store_with_mugs(&mut c, "FAR", 52.60, 13.55, 5).await;
    store_with_mugs(&mut c, "NEAR", 52.52, 13.41, 1).await;
    store_with_mugs(&mut c, "MID", 52.53, 13.45, 5).await;

    let first = allocate(&mut c, allocate_near("alloc-1", 1)).await;
    let a = allocated(&first);
    assert_eq!(a.holds.len(), 1);
    assert_eq!(a.holds[0].store_id, "NEAR");
    assert_eq!(a.holds[0].state(), pb::HoldState::Active);
    let alternatives: Vec<_> = first
        .alternatives
        .iter()
        .map(|x| x.store_id.as_str())
        .collect();
    assert_eq!(alternatives, ["MID", "FAR"]);
    assert!(first.alternatives[0].distance_m < first.alternatives[1].distance_m);
    assert!(first.alternatives[0].complete);
    assert_eq!(availability(&mut c, "NEAR").await.atp, 0);

    // NEAR has nothing left: the next store by distance takes the cart.
    let second = allocate(&mut c, allocate_near("alloc-2", 2)).await;
    let b = allocated(&second);
    assert_eq!(b.holds[0].store_id, "MID");
    assert_eq!(b.holds[0].lines, [line("MUG", 2)]);
    let near = &second.alternatives[0];
    assert_eq!(near.store_id, "NEAR");
    assert_eq!((near.can_supply[0].qty, near.complete), (0, false));
    assert_eq!(availability(&mut c, "MID").await.held, 2);

    // A retry with the same key is the same allocation, and holds nothing more.
    let retry = allocate(&mut c, allocate_near("alloc-2", 2)).await;
    assert!(retry.replayed);
    assert_eq!(allocated(&retry).holds[0].hold_id, b.holds[0].hold_id);
    assert_eq!(availability(&mut c, "MID").await.held, 2);

    // More than any store has: NO_STORE with the nearest store's shortage.
    let none = allocate(&mut c, allocate_near("alloc-3", 50)).await;
    let Some(pb::allocate_response::Outcome::Rejected(r)) = none.outcome else {
        panic!("expected a rejection: {none:?}");
    };
    assert_eq!(r.reason(), pb::HoldRejectReason::NoStore);
    assert_eq!(
        r.shortages,
        [pb::LineShortage {
            sku: "MUG".into(),
            requested: 50,
            available: 0,
        }]
    );

    // Only stores within the distance are candidates.
    let mut close = allocate_near("alloc-4", 1);
    close.max_distance_m = 5_000;
    let close = allocate(&mut c, close).await;
    assert_eq!(allocated(&close).holds[0].store_id, "MID");
    assert!(close.alternatives.iter().all(|x| x.store_id != "FAR"));

    // Out-of-range input is refused naming the field.
    let mut far = allocate_near("alloc-5", 1);
    far.max_distance_m = 600_000;
    let err = c
        .holds
        .allocate(with_token(far, CHECKOUT_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(field_violation(&err), "max_distance_m");
}

// ---------------------------------------------------------------- calendars and slots

/// The civil date (UTC) of a day number since the epoch, `YYYY-MM-DD` (H. Hinnant's
/// `civil_from_days`).
fn utc_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn every_day(start_minute: u32, end_minute: u32) -> pb::WeeklyHours {
    pb::WeeklyHours {
        days: (1..=7)
            .map(|weekday| pb::DayHours {
                weekday,
                open: vec![pb::LocalTimeRange {
                    start_minute,
                    end_minute,
                }],
            })
            .collect(),
    }
}

async fn set_hours(
    c: &mut Clients,
    store: &str,
    hours: pb::WeeklyHours,
    exceptions: Vec<pb::DateException>,
) -> Result<pb::Store, Status> {
    c.stores
        .set_hours(with_token(
            pb::SetHoursRequest {
                idempotency_key: key("hours"),
                store_id: store.into(),
                hours: Some(hours),
                exceptions,
            },
            ADMIN_TOKEN,
        ))
        .await
        .map(|r| r.into_inner().store.unwrap())
}

async fn list_slots(c: &mut Clients, store: &str, date: &str) -> Vec<pb::SlotAvailability> {
    c.holds
        .list_slots(with_token(
            pb::ListSlotsRequest {
                store_id: store.into(),
                date: date.into(),
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .slots
}

async fn slot_hold(c: &mut Clients, store: &str, start_ms: i64) -> pb::hold_response::Outcome {
    c.holds
        .hold(with_token(
            pb::HoldRequest {
                idempotency_key: key("slot-hold"),
                store_id: store.into(),
                lines: vec![line("MUG", 1)],
                expiry: Some(pb::hold_request::Expiry::SlotStartMs(start_ms)),
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .outcome
        .unwrap()
}

#[tokio::test]
async fn slots_follow_the_calendar_and_a_slot_hold_takes_capacity() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    store_with_mugs(&mut c, "CAL", 48.14, 11.58, 10).await;

    let config = c
        .stores
        .set_slot_config(with_token(
            pb::SetSlotConfigRequest {
                idempotency_key: key("slots"),
                store_id: "CAL".into(),
                slot_config: Some(pb::SlotConfig {
                    slot_ms: HOUR_MS,
                    lead_time_ms: 0,
                    pickups_per_staff_per_slot: 1,
                    hold_grace_ms: 30 * 60_000,
                    pick_time_per_order_ms: 120_000,
                }),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let sc = config.store.unwrap().slot_config.unwrap();
    assert_eq!((sc.slot_ms, sc.pick_time_per_order_ms), (HOUR_MS, 120_000));
    let staffed = c
        .stores
        .set_staffing(with_token(
            pb::SetStaffingRequest {
                idempotency_key: key("staff"),
                store_id: "CAL".into(),
                windows: (1..=7)
                    .map(|weekday| pb::StaffingWindow {
                        day: Some(pb::staffing_window::Day::Weekday(weekday)),
                        span: Some(pb::LocalTimeRange {
                            start_minute: 0,
                            end_minute: 1_440,
                        }),
                        staff_count: 2,
                    })
                    .collect(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(staffed.store.unwrap().staffing.len(), 7);

    let today = now_ms().div_euclid(DAY_MS);
    let (tomorrow, holiday) = (today + 1, today + 2);
    let store = set_hours(
        &mut c,
        "CAL",
        every_day(9 * 60, 17 * 60),
        vec![pb::DateException {
            date: utc_date(holiday),
            open: Vec::new(),
            note: "stocktake".into(),
        }],
    )
    .await
    .unwrap();
    // Each part was kept when the next was set.
    assert_eq!(store.hours.unwrap().days.len(), 7);
    assert_eq!(store.staffing.len(), 7);
    assert_eq!(store.slot_config.unwrap().slot_ms, HOUR_MS);
    assert_eq!(store.exceptions[0].date, utc_date(holiday));

    let slots = list_slots(&mut c, "CAL", &utc_date(tomorrow)).await;
    assert_eq!(slots.len(), 8, "09:00..17:00 in one-hour slots");
    let first = slots[0].slot.unwrap();
    assert_eq!(first.start_ms, tomorrow * DAY_MS + 9 * HOUR_MS);
    assert_eq!(first.end_ms, first.start_ms + HOUR_MS);
    assert_eq!(
        (slots[0].capacity, slots[0].booked, slots[0].free),
        (2, 0, 2)
    );
    assert!(
        list_slots(&mut c, "CAL", &utc_date(holiday))
            .await
            .is_empty()
    );

    // A slot hold books the slot with the stock and expires after slot end + grace.
    let pb::hold_response::Outcome::Granted(h) = slot_hold(&mut c, "CAL", first.start_ms).await
    else {
        panic!("slot hold refused");
    };
    assert_eq!(h.slot, Some(first));
    assert_eq!(h.expires_at_ms, first.end_ms + 30 * 60_000);
    let after = list_slots(&mut c, "CAL", &utc_date(tomorrow)).await;
    assert_eq!((after[0].booked, after[0].free), (1, 1));
    assert_eq!((after[1].booked, after[1].free), (0, 2));
    let pb::hold_response::Outcome::Granted(_) = slot_hold(&mut c, "CAL", first.start_ms).await
    else {
        panic!("second booking refused");
    };
    let pb::hold_response::Outcome::Rejected(full) = slot_hold(&mut c, "CAL", first.start_ms).await
    else {
        panic!("a full slot was booked");
    };
    assert_eq!(full.reason(), pb::HoldRejectReason::SlotFull);

    // Outside the opening hours, and on the closed day, there is no slot to book.
    for start in [
        tomorrow * DAY_MS + 3 * HOUR_MS,
        holiday * DAY_MS + 10 * HOUR_MS,
    ] {
        let pb::hold_response::Outcome::Rejected(r) = slot_hold(&mut c, "CAL", start).await else {
            panic!("a slot outside the hours was booked");
        };
        assert_eq!(r.reason(), pb::HoldRejectReason::SlotUnavailable);
    }
    assert_eq!(availability(&mut c, "CAL").await.held, 2);
}

/// A store `id` with 10 mugs, open and staffed (2) around the clock, with hour-long slots
/// of capacity 2 (1 pickup per staff), no lead time and 2 minutes' pick time.
async fn hourly_store(c: &mut Clients, id: &str) {
    store_with_mugs(c, id, 48.14, 11.58, 10).await;
    c.stores
        .set_slot_config(with_token(
            pb::SetSlotConfigRequest {
                idempotency_key: key("slots"),
                store_id: id.into(),
                slot_config: Some(pb::SlotConfig {
                    slot_ms: HOUR_MS,
                    lead_time_ms: 0,
                    pickups_per_staff_per_slot: 1,
                    hold_grace_ms: 30 * 60_000,
                    pick_time_per_order_ms: 120_000,
                }),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    c.stores
        .set_staffing(with_token(
            pb::SetStaffingRequest {
                idempotency_key: key("staff"),
                store_id: id.into(),
                windows: (1..=7)
                    .map(|weekday| pb::StaffingWindow {
                        day: Some(pb::staffing_window::Day::Weekday(weekday)),
                        span: Some(pb::LocalTimeRange {
                            start_minute: 0,
                            end_minute: 1_440,
                        }),
                        staff_count: 2,
                    })
                    .collect(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    set_hours(c, id, every_day(0, 1_440), Vec::new())
        .await
        .unwrap();
}

/// hold.proto `ExtendRequest.ttl_ms`: a slot hold cannot be extended past its slot
/// (FAILED_PRECONDITION with a PreconditionFailure, the hold unchanged); within its slot
/// it can.
#[tokio::test]
async fn a_slot_hold_is_not_extended_past_its_slot() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    hourly_store(&mut c, "XT").await;
    // The slot after the next full hour: it ends at most 3 hours from now.
    let start = (now_ms().div_euclid(HOUR_MS) + 1) * HOUR_MS;
    let pb::hold_response::Outcome::Granted(h) = slot_hold(&mut c, "XT", start).await else {
        panic!("slot hold refused");
    };
    let slot_expires_at_ms = start + HOUR_MS + 30 * 60_000;
    assert_eq!(h.expires_at_ms, slot_expires_at_ms);
    let extend = |ttl_ms| {
        with_token(
            pb::ExtendRequest {
                idempotency_key: key("extend"),
                hold_id: h.hold_id,
                ttl_ms,
            },
            CHECKOUT_TOKEN,
        )
    };

    // 23 hours is within the store's max_hold_ms but far past the slot.
    let refused = c.holds.extend(extend(23 * HOUR_MS)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let pf = refused
        .get_details_precondition_failure()
        .expect("PreconditionFailure detail");
    assert_eq!(pf.violations[0].r#type, "ILLEGAL_TRANSITION");
    assert_eq!(pf.violations[0].subject, format!("hold/{}", h.hold_id));
    assert!(
        refused.message().contains(&slot_expires_at_ms.to_string()),
        "says how far it may go: {refused:?}"
    );
    // Confirm answers with the hold as it is: the refusal changed nothing.
    let confirmed = c
        .holds
        .confirm(with_token(
            pb::ConfirmRequest {
                idempotency_key: key("confirm"),
                hold_id: h.hold_id,
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::confirm_response::Outcome::Confirmed(info)) = confirmed.outcome else {
        panic!("{confirmed:?}");
    };
    assert_eq!(info.expires_at_ms, slot_expires_at_ms);

    // Within the slot it extends (here: shortens) as before.
    let ok = c.holds.extend(extend(60_000)).await.unwrap().into_inner();
    let Some(pb::extend_response::Outcome::Extended(info)) = ok.outcome else {
        panic!("{ok:?}");
    };
    assert!(info.expires_at_ms < slot_expires_at_ms, "{info:?}");
}

#[tokio::test]
async fn calendar_input_is_refused_naming_the_field() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    store_with_mugs(&mut c, "CAL", 48.14, 11.58, 0).await;
    // Not a span within a day.
    let err = set_hours(&mut c, "CAL", every_day(600, 1_500), Vec::new())
        .await
        .unwrap_err();
    assert_eq!(field_violation(&err), "hours.days[0].open[0]");
    // Not a whole number of the default 30-minute slots.
    let err = set_hours(&mut c, "CAL", every_day(540, 585), Vec::new())
        .await
        .unwrap_err();
    assert_eq!(field_violation(&err), "hours.days");
    let bad_date = pb::DateException {
        date: "2026-02-30".into(),
        ..Default::default()
    };
    let err = set_hours(&mut c, "CAL", every_day(540, 600), vec![bad_date])
        .await
        .unwrap_err();
    assert_eq!(field_violation(&err), "exceptions[0].date");
    let err = c
        .stores
        .set_staffing(with_token(
            pb::SetStaffingRequest {
                idempotency_key: key("staff"),
                store_id: "CAL".into(),
                windows: vec![pb::StaffingWindow {
                    day: Some(pb::staffing_window::Day::Date("2026-12-24".into())),
                    span: Some(pb::LocalTimeRange {
                        start_minute: 0,
                        end_minute: 60,
                    }),
                    staff_count: 1,
                }],
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(field_violation(&err), "windows[0].date");
    let err = c
        .stores
        .set_slot_config(with_token(
            pb::SetSlotConfigRequest {
                idempotency_key: key("slots"),
                store_id: "CAL".into(),
                slot_config: Some(pb::SlotConfig {
                    slot_ms: 7 * 60_000,
                    pickups_per_staff_per_slot: 1,
                    ..Default::default()
                }),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(field_violation(&err), "slot_config.slot_ms");
    // Calendars are the admin's.
    let denied = c
        .stores
        .set_hours(with_token(
            pb::SetHoursRequest {
                idempotency_key: key("hours"),
                store_id: "S1".into(),
                hours: Some(every_day(540, 600)),
                exceptions: Vec::new(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
}

// ---------------------------------------------------------------- nearby availability

#[tokio::test]
async fn nearby_availability_lists_stores_nearest_first() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    store_with_mugs(&mut c, "S3", 52.60, 13.55, 7).await;
    store_with_mugs(&mut c, "S1", 52.52, 13.41, 1).await;
    store_with_mugs(&mut c, "S2", 52.53, 13.45, 4).await;
    store_with_mugs(&mut c, "S9", 48.14, 11.58, 9).await;
    let request = pb::NearbyAvailabilityRequest {
        position: point(52.52, 13.40),
        radius_m: 100_000,
        lines: vec![line("MUG", 3)],
        ..Default::default()
    };
    let got = c
        .inventory
        .nearby_availability(with_token(request.clone(), CHECKOUT_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .stores;
    let ids: Vec<_> = got.iter().map(|s| s.store_id.as_str()).collect();
    assert_eq!(ids, ["S1", "S2", "S3"], "S9 (Munich) is beyond the radius");
    assert!(got.windows(2).all(|w| w[0].distance_m < w[1].distance_m));
    assert_eq!((got[0].available[0].qty, got[0].complete), (1, false));
    assert_eq!((got[1].available[0].qty, got[1].complete), (3, true));
    assert!(got.iter().all(|s| s.accepting_pickups));

    // A staff token of one store reads the stock of all (inventory.proto: availability
    // is not customer data), so store staff can send a customer to a nearby store.
    let staff = c
        .inventory
        .nearby_availability(with_token(request.clone(), STAFF_S1_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .stores;
    let staff_ids: Vec<_> = staff.iter().map(|s| s.store_id.as_str()).collect();
    assert_eq!(staff_ids, ids);

    let err = c
        .inventory
        .nearby_availability(with_token(
            pb::NearbyAvailabilityRequest {
                position: None,
                ..request
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(field_violation(&err), "position");
}

// ---------------------------------------------------------------- orders

/// Holds `qty` MUG at `store` for `ttl_ms`, creates the order and takes it to PICKING
/// (staff actions with `staff_token`). Returns the order id and the hold's expiry.
/// Issue 15, found 3: a Hold answer carries the pickup estimate (a slot hold its slot's
/// start), and an order keeps the one promised at its confirmation
/// (`PickupOrder.estimated_ready_ms` was always 0).
#[tokio::test]
async fn holds_and_orders_carry_the_ready_estimate() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    hourly_store(&mut c, "EST").await;
    let before = now_ms();
    let (order, _) = picking_order(&mut c, "EST", 1, HOUR_MS, ADMIN_TOKEN).await;
    let promised = get_order(&mut c, order).await.estimated_ready_ms;
    // No lead time, an empty queue: the next slot boundary (hourly slots) after now.
    let next_slot = (before.div_euclid(HOUR_MS) + 1) * HOUR_MS;
    assert!(
        promised == next_slot || promised == next_slot + HOUR_MS,
        "{promised} vs {next_slot}"
    );
    let plain = c
        .holds
        .hold(with_token(
            pb::HoldRequest {
                idempotency_key: key("hold"),
                store_id: "EST".into(),
                lines: vec![line("MUG", 1)],
                expiry: None,
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(plain.estimated_ready_ms >= promised, "{plain:?}");
    assert_eq!(
        plain.estimated_ready_ms % HOUR_MS,
        0,
        "a slot start: {plain:?}"
    );
    let start = next_slot + 2 * HOUR_MS;
    let slotted = c
        .holds
        .hold(with_token(
            pb::HoldRequest {
                idempotency_key: key("slot-hold"),
                store_id: "EST".into(),
                lines: vec![line("MUG", 1)],
                expiry: Some(pb::hold_request::Expiry::SlotStartMs(start)),
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(slotted.estimated_ready_ms, start, "{slotted:?}");
}

async fn picking_order(
    c: &mut Clients,
    store: &str,
    qty: u32,
    ttl_ms: i64,
    staff_token: &str,
) -> (u64, i64) {
    let held = c
        .holds
        .hold(with_token(
            pb::HoldRequest {
                idempotency_key: key("hold"),
                store_id: store.into(),
                lines: vec![line("MUG", qty)],
                expiry: Some(pb::hold_request::Expiry::TtlMs(ttl_ms)),
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::hold_response::Outcome::Granted(h)) = held.outcome else {
        panic!("hold refused: {held:?}");
    };
    let created = c
        .pickups
        .create_order(with_token(
            pb::CreateOrderRequest {
                idempotency_key: key("order"),
                hold_id: h.hold_id,
                channel: pb::Channel::Direct as i32,
                channel_order_id: key("web"),
                lines: vec![pb::PricedLine {
                    sku: "MUG".into(),
                    qty,
                    unit_price_minor: 900,
                    ..Default::default()
                }],
                currency: "EUR".into(),
                ..Default::default()
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::create_order_response::Outcome::Order(order)) = created.outcome else {
        panic!("order refused: {created:?}");
    };
    c.pickups
        .start_picking(with_token(
            pb::StartPickingRequest {
                idempotency_key: key("pick"),
                order_id: order.order_id,
                staff_id: "anna".into(),
            },
            staff_token,
        ))
        .await
        .unwrap();
    (order.order_id, h.expires_at_ms)
}

async fn ready_order(
    c: &mut Clients,
    store: &str,
    qty: u32,
    ttl_ms: i64,
    staff: &str,
) -> (u64, i64) {
    let (order, expires_at_ms) = picking_order(c, store, qty, ttl_ms, staff).await;
    c.pickups
        .mark_ready(with_token(
            pb::MarkReadyRequest {
                idempotency_key: key("ready"),
                order_id: order,
                staff_id: "anna".into(),
            },
            staff,
        ))
        .await
        .unwrap();
    (order, expires_at_ms)
}

async fn no_show(c: &mut Clients, order: u64, token: &str) -> Result<pb::PickupOrder, Status> {
    c.pickups
        .no_show(with_token(
            pb::NoShowRequest {
                idempotency_key: key("no-show"),
                order_id: order,
                staff_id: "anna".into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().order.unwrap())
}

#[tokio::test]
async fn no_show_after_the_pickup_window_releases_the_stock() {
    const TTL_MS: i64 = 3_000;
    // The expiry ticker must not beat the staff to it: one tick at start, then a minute.
    let server = TestServer::start(|c| c.data.expire_interval_ms = 60_000).await;
    let mut c = clients(&server).await;
    store_with_mugs(&mut c, "S1", 52.52, 13.41, 3).await;
    store_with_mugs(&mut c, "S2", 52.53, 13.45, 3).await;
    let (order, expires_at_ms) = ready_order(&mut c, "S1", 2, TTL_MS, STAFF_S1_TOKEN).await;
    let (other, _) = ready_order(&mut c, "S2", 1, TTL_MS, ADMIN_TOKEN).await;
    assert_eq!(availability(&mut c, "S1").await.atp, 1);

    // Within the window the customer may still come.
    let early = no_show(&mut c, order, STAFF_S1_TOKEN).await.unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition, "{early:?}");
    // A tablet of S1 cannot touch S2's orders.
    let denied = no_show(&mut c, other, STAFF_S1_TOKEN).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // The window of an order without a slot ends with its hold.
    let wait_ms = u64::try_from(expires_at_ms + 100 - now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    let gone = no_show(&mut c, order, STAFF_S1_TOKEN).await.unwrap();
    assert_eq!(gone.state(), pb::OrderState::NoShow);
    let last = gone.history.last().unwrap();
    assert_eq!(
        (last.from(), last.to()),
        (pb::OrderState::Ready, pb::OrderState::NoShow)
    );
    let cell = availability(&mut c, "S1").await;
    assert_eq!((cell.held, cell.atp), (0, 3));
    // Recording it again changes nothing.
    let again = no_show(&mut c, order, STAFF_S1_TOKEN).await.unwrap();
    assert_eq!(again.history.len(), gone.history.len());
    // S2's order is still waiting for its own staff.
    assert_eq!(availability(&mut c, "S2").await.held, 1);
}

/// Reports that only `picked` mugs of `order` were found, asking to re-allocate the rest
/// within `max_distance_m` (0: the server's default).
async fn reallocate_mugs(
    c: &mut Clients,
    order: u64,
    picked: u32,
    max_distance_m: u32,
    token: &str,
) -> pb::ReportShortResponse {
    c.pickups
        .report_short(with_token(
            pb::ReportShortRequest {
                idempotency_key: key("short"),
                order_id: order,
                staff_id: "anna".into(),
                lines: vec![pb::ShortLine {
                    sku: "MUG".into(),
                    picked_qty: picked,
                    resolution: pb::ShortResolution::Reallocate as i32,
                }],
                reallocate_max_distance_m: max_distance_m,
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_short_pick_with_reallocate_holds_the_missing_units_at_the_next_store() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    store_with_mugs(&mut c, "S1", 52.52, 13.41, 3).await;
    store_with_mugs(&mut c, "S2", 52.53, 13.45, 1).await;
    store_with_mugs(&mut c, "S3", 52.60, 13.55, 5).await;
    let (order, _) = picking_order(&mut c, "S1", 3, 3_600_000, STAFF_S1_TOKEN).await;

    let report = reallocate_mugs(&mut c, order, 1, 0, STAFF_S1_TOKEN).await;
    let o = report.order.unwrap();
    assert_eq!(o.state(), pb::OrderState::Picking);
    assert_eq!(o.lines[0].qty, 1);
    assert_eq!(report.reallocations.len(), 1);
    let r = &report.reallocations[0];
    assert_eq!((r.sku.as_str(), r.missing_qty), ("MUG", 2));
    let result = r.result.as_ref().unwrap();
    // S2 is nearer but has one unit; S1 (the short store) is never a candidate.
    let a = allocated(result);
    assert_eq!(a.holds[0].store_id, "S3");
    assert_eq!(a.holds[0].lines, [line("MUG", 2)]);
    let alternatives: Vec<_> = result
        .alternatives
        .iter()
        .map(|x| x.store_id.as_str())
        .collect();
    assert_eq!(alternatives, ["S2"]);
    assert_eq!(availability(&mut c, "S3").await.held, 2);
    // The short store's missing units left its stock; its hold keeps the one found.
    let s1 = availability(&mut c, "S1").await;
    assert_eq!((s1.on_hand, s1.held), (1, 1));

    // Nothing within a small radius: the line stays short and the response says why.
    let (order, _) = picking_order(&mut c, "S2", 1, 3_600_000, ADMIN_TOKEN).await;
    let report = reallocate_mugs(&mut c, order, 0, 1_000, ADMIN_TOKEN).await;
    let result = report.reallocations[0].result.as_ref().unwrap();
    let Some(pb::allocate_response::Outcome::Rejected(r)) = &result.outcome else {
        panic!("expected no store: {result:?}");
    };
    assert_eq!(r.reason(), pb::HoldRejectReason::NoStore);
}

async fn report_short(
    c: &mut Clients,
    order: u64,
    lines: Vec<pb::ShortLine>,
) -> Result<pb::ReportShortResponse, Status> {
    c.pickups
        .report_short(with_token(
            pb::ReportShortRequest {
                idempotency_key: key("short"),
                order_id: order,
                staff_id: "anna".into(),
                lines,
                reallocate_max_distance_m: 0,
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .map(|r| r.into_inner())
}

fn short_line(sku: &str, picked_qty: u32, resolution: pb::ShortResolution) -> pb::ShortLine {
    pb::ShortLine {
        sku: sku.into(),
        picked_qty,
        resolution: resolution as i32,
    }
}

async fn get_order(c: &mut Clients, order: u64) -> pb::PickupOrder {
    c.pickups
        .get_order(with_token(
            pb::GetOrderRequest {
                key: Some(pb::get_order_request::Key::OrderId(order)),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

/// A ReportShort that fails executed nothing: a SKU listed twice, or a bad later line,
/// leaves the order, the stock and the other stores as they were. Shorting every unit
/// cancels the order (pickup.proto), so it can neither become READY nor reach a
/// hand-off without a receipt.
#[tokio::test]
async fn a_refused_report_short_changes_nothing_and_an_empty_order_is_cancelled() {
    use pb::ShortResolution::{Cancel, Reallocate};
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    store_with_mugs(&mut c, "S1", 52.52, 13.41, 3).await;
    store_with_mugs(&mut c, "S2", 52.53, 13.45, 5).await;
    let (order, _) = picking_order(&mut c, "S1", 1, 3_600_000, STAFF_S1_TOKEN).await;
    let before = get_order(&mut c, order).await;
    let refused = [
        vec![
            short_line("MUG", 0, Reallocate),
            short_line("MUG", 0, Reallocate),
        ],
        vec![short_line("MUG", 0, Cancel), short_line("MUG", 0, Cancel)],
        vec![
            short_line("MUG", 0, Reallocate),
            short_line("TEA", 0, Cancel),
        ],
    ];
    for lines in refused {
        let e = report_short(&mut c, order, lines.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{lines:?}: {e:?}");
        assert!(field_violation(&e).starts_with("lines"), "{e:?}");
        let s1 = availability(&mut c, "S1").await;
        assert_eq!((s1.on_hand, s1.held), (3, 1), "{lines:?}");
        assert_eq!(availability(&mut c, "S2").await.held, 0, "{lines:?}");
        let after = get_order(&mut c, order).await;
        assert_eq!(after.lines, before.lines, "{lines:?}");
        assert_eq!(after.history, before.history, "{lines:?}");
    }

    // Nothing left to pick: the order is cancelled and its hold released.
    let report = report_short(&mut c, order, vec![short_line("MUG", 0, Cancel)])
        .await
        .unwrap();
    let o = report.order.unwrap();
    assert_eq!(o.state(), pb::OrderState::Cancelled);
    let s1 = availability(&mut c, "S1").await;
    assert_eq!((s1.on_hand, s1.held), (2, 0));
    let ready = c
        .pickups
        .mark_ready(with_token(
            pb::MarkReadyRequest {
                idempotency_key: key("ready"),
                order_id: order,
                staff_id: "anna".into(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(ready.code(), Code::FailedPrecondition, "{ready:?}");
}

/// `pickline simulate --target`: the simulator drives a server on a simulated clock over
/// gRPC and gets the same business figures as against the engine in process, call for
/// call at the same simulated instants (only pickup codes differ: the server draws them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulation_over_grpc_matches_the_same_seed_in_process() {
    use pickline_benches::sim::{self, EngineBackend, Scenario};
    use pickline_sidecar::simulate::GrpcBackend;

    let server = TestServer::start(|c| {
        c.grpc.simulated_clock = true;
        // Acknowledged at once: the figures do not depend on fsync, the test's time does.
        c.data.durability = pickline_sidecar::config::DurabilityMode::Async;
    })
    .await;
    let url = format!("http://{}", server.grpc_addr);

    // Without the simulated time an engine request is refused, naming the header.
    let mut c = clients(&server).await;
    let refused = c
        .stores
        .list_stores(with_token(pb::ListStoresRequest::default(), ADMIN_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("pickline-sim-now-ms"),
        "{refused:?}"
    );

    let (over_grpc, in_process) = tokio::task::spawn_blocking(move || {
        // The smoke preset, smaller: a day of 3 stores still spikes, expires and collects.
        let sc = Scenario {
            stores: 3,
            skus: 120,
            accuracy_cells: 60,
            ..Scenario::preset("smoke", 7).unwrap()
        };
        let mut grpc = GrpcBackend::connect(&url, ADMIN_TOKEN).unwrap();
        let over_grpc = sim::run(&sc, &mut grpc, "grpc", |_, _| {}).unwrap();
        // A second run against the same (now populated) server is refused up front.
        let again = GrpcBackend::connect(&url, ADMIN_TOKEN).err().unwrap();
        assert!(
            again.to_string().contains("already has 3 store(s)"),
            "{again}"
        );
        let mut engine = EngineBackend::new(sc.stores, sc.skus).unwrap();
        let in_process = sim::run(&sc, &mut engine, "engine", |_, _| {}).unwrap();
        (over_grpc, in_process)
    })
    .await
    .unwrap();
    assert!(in_process.orders > 100, "{}", in_process.to_json());
    assert!(
        in_process.kpis.holds_expired > 0,
        "{}",
        in_process.to_json()
    );
    assert_eq!(in_process.kpis.conservation_ok, Some(true));
    let figures = |r: &sim::SimReport| {
        let mut v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        // What only the in-process engine can say: its name and its conservation check.
        v.as_object_mut().unwrap().remove("backend");
        v["kpis"].as_object_mut().unwrap().remove("conservation_ok");
        v
    };
    assert_eq!(figures(&over_grpc), figures(&in_process));
    server.stop().await.unwrap();
}

/// `pickline simulate --intake`: the orders enter through the intake flow (a checkout
/// hold, then a canonical order naming it over IntakeService.Submit) and the business
/// figures are the in-process engine's for the same seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulation_through_intake_matches_the_same_seed_in_process() {
    use pickline_benches::sim::{self, EngineBackend, Scenario};
    use pickline_sidecar::simulate::GrpcBackend;

    let server = TestServer::start(|c| {
        c.grpc.simulated_clock = true;
        c.data.durability = pickline_sidecar::config::DurabilityMode::Async;
    })
    .await;
    let url = format!("http://{}", server.grpc_addr);
    let (through_intake, in_process) = tokio::task::spawn_blocking(move || {
        let sc = Scenario {
            stores: 3,
            skus: 120,
            accuracy_cells: 60,
            ..Scenario::preset("smoke", 11).unwrap()
        };
        // Every order: a checkout hold, then IntakeService.Submit of a canonical order
        // naming it (journaled, queued, the hold confirmed and made an order by intake).
        let mut intake = GrpcBackend::connect(&url, ADMIN_TOKEN)
            .unwrap()
            .through_intake();
        let through_intake = sim::run(&sc, &mut intake, "intake", |_, _| {}).unwrap();
        let mut engine = EngineBackend::new(sc.stores, sc.skus).unwrap();
        let in_process = sim::run(&sc, &mut engine, "engine", |_, _| {}).unwrap();
        (through_intake, in_process)
    })
    .await
    .unwrap();
    assert!(in_process.orders > 100, "{}", in_process.to_json());
    let figures = |r: &sim::SimReport| {
        let mut v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        v.as_object_mut().unwrap().remove("backend");
        v["kpis"].as_object_mut().unwrap().remove("conservation_ok");
        v
    };
    assert_eq!(figures(&through_intake), figures(&in_process));
    // Every order went through intake: accepted by the gRPC source, none left over.
    let mut intake = pb::intake_service_client::IntakeServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let health = intake
        .get_intake_health(with_token(pb::GetIntakeHealthRequest {}, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let grpc = health.sources.iter().find(|s| s.source == "grpc").unwrap();
    assert_eq!(grpc.accepted, in_process.orders, "{health:?}");
    assert_eq!(
        (grpc.dead_lettered, grpc.shed, grpc.failed),
        (0, 0, 0),
        "{health:?}"
    );
    assert_eq!(health.queue_depth, 0, "{health:?}");
    server.stop().await.unwrap();
}
