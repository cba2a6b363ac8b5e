//! The customer pages: order status by link, e-receipt, store finder.
//!
//! A status link is the only key to an order here: the token resolves through the live
//! feed's index ([`super::live::Live::resolve`]); an unknown or malformed token is the
//! same 404 as any other missing page. The pages show the order's state, the estimated
//! ready time, the store's address and pickup instructions and, once ready, the pickup
//! code and its QR code; they never show the customer's email or phone.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, Query, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response, sse::Event as SseEvent},
    routing::get,
};
use pickline_engine::{LineRequest, NearbyQuery, OrderId};
use tokio_stream::{StreamExt as _, wrappers::BroadcastStream};

use super::{PageError, Web, live::Change, now, views};
use crate::order_link::parse_token;

pub(super) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/p/{token}", get(status))
        .route("/p/{token}/events", get(events))
        .route("/p/{token}/receipt", get(receipt))
        .route("/stores", get(finder))
}

fn resolve(web: &Web, token: &str) -> Result<OrderId, PageError> {
    let bytes = parse_token(token).ok_or(PageError::NotFound)?;
    web.live.resolve(&bytes).ok_or(PageError::NotFound)
}

/// Pages behind a link are private: not cached, not sent as a referrer.
fn private(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

#[derive(serde::Deserialize)]
struct PartQuery {
    part: Option<String>,
}

async fn status(
    State(web): State<Arc<Web>>,
    Path(token): Path<String>,
    Query(q): Query<PartQuery>,
) -> Response {
    let result = (|| {
        let order = resolve(&web, &token)?;
        let db = web.db()?;
        let model = views::StatusModel::read(db.engine(), order, now(), &web.config)?;
        Ok::<_, PageError>(if q.part.as_deref() == Some("live") {
            views::status_live(&model, &token).into_response()
        } else {
            views::status_page(&model, &token).into_response()
        })
    })();
    private(result.unwrap_or_else(IntoResponse::into_response))
}

async fn events(State(web): State<Arc<Web>>, Path(token): Path<String>) -> Response {
    let order = match resolve(&web, &token) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let stream = BroadcastStream::new(web.live.subscribe()).filter_map(move |change| {
        let event = match change {
            Ok(Change::Order { order: o, status }) if o == order => SseEvent::default()
                .event("order")
                .data(views::status_word(status)),
            Ok(Change::Order { .. }) => return None,
            Ok(Change::Resync) | Err(_) => SseEvent::default().event("resync").data("resync"),
        };
        Some(event)
    });
    private(super::staff::sse(web.until_closed(stream)))
}

async fn receipt(State(web): State<Arc<Web>>, Path(token): Path<String>) -> Response {
    let result = (|| {
        let order = resolve(&web, &token)?;
        let db = web.db()?;
        match db.engine().order_receipt(order) {
            Some(Ok(r)) => Ok(views::receipt_page(&r, Some(&format!("/p/{token}")))),
            Some(Err(e)) => Err(PageError::Internal(e.to_string())),
            None => Err(PageError::NotFound),
        }
    })();
    private(match result {
        Ok(page) => page.into_response(),
        Err(e) => e.into_response(),
    })
}

#[derive(serde::Deserialize)]
struct FinderQuery {
    sku: Option<String>,
    qty: Option<String>,
    near: Option<String>,
}

/// Stores listed by the finder at most.
const FINDER_STORES_MAX: usize = 10;

async fn finder(State(web): State<Arc<Web>>, Query(q): Query<FinderQuery>) -> Response {
    let sku = q.sku.unwrap_or_default().trim().to_owned();
    let near = q.near.unwrap_or_default().trim().to_owned();
    let qty_text = q.qty.unwrap_or_default();
    let mut form = views::FinderModel {
        sku: sku.clone(),
        qty: if qty_text.trim().is_empty() {
            "1".into()
        } else {
            qty_text.trim().to_owned()
        },
        near: near.clone(),
        error: None,
        results: None,
    };
    if sku.is_empty() && near.is_empty() {
        return views::finder_page(&form).into_response();
    }
    let result = (|| {
        if sku.is_empty() || sku.len() > 256 {
            return Err("Enter the item number (SKU).".to_owned());
        }
        let qty: u32 = form
            .qty
            .parse()
            .ok()
            .filter(|q| (1..=999).contains(q))
            .ok_or("Enter how many you want (1 to 999).")?;
        let position = position(&web, &near).ok_or(
            "Enter a postal code we know, or a position as latitude, longitude (52.52, 13.40).",
        )?;
        let db = web
            .db()
            .map_err(|_| "Pickline is starting; try again in a moment.")?;
        let engine = db.engine();
        let query = NearbyQuery {
            position,
            max_distance_km: web.config.find_radius_km,
            lines: vec![LineRequest::new(sku.clone(), qty)],
            max_stores: FINDER_STORES_MAX,
            include_not_accepting: false,
        };
        let found = engine
            .nearby_availability(&query, |_| true)
            .map_err(|e| format!("Cannot search: {e}"))?;
        let now = now();
        Ok(found
            .into_iter()
            .map(|s| {
                let def = engine.store_def(s.store);
                let next = engine
                    .estimate_ready(&s.store_external_id, now)
                    .ok()
                    .flatten()
                    .map(|e| e.slot);
                let available = s.supply.first().map_or(0, |l| l.available);
                views::FinderRow {
                    name: def
                        .as_ref()
                        .map_or(s.store_external_id.clone(), |d| d.name.clone()),
                    address: web.config.address(&s.store_external_id).map(str::to_owned),
                    distance_km: s.distance_km,
                    available,
                    enough: available >= qty,
                    next_slot: next.map(|slot| {
                        views::local_slot(
                            def.as_ref().map_or("UTC", |d| d.time_zone.as_str()),
                            slot.start_ms,
                            slot.end_ms,
                        )
                    }),
                }
            })
            .collect::<Vec<_>>())
    })();
    match result {
        Ok(rows) => form.results = Some(rows),
        Err(e) => form.error = Some(e),
    }
    views::finder_page(&form).into_response()
}

/// A configured postal code, or `lat, lon` typed out.
fn position(web: &Web, near: &str) -> Option<(f64, f64)> {
    if let Some(p) = web.config.postal_position(near) {
        return Some(p);
    }
    let (lat, lon) = near.split_once(',')?;
    let lat: f64 = lat.trim().parse().ok()?;
    let lon: f64 = lon.trim().parse().ok()?;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}
