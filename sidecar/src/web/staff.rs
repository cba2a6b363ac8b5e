//! `/staff/...`: the store staff tablet pages.
//!
//! Every page but sign-in needs a session; every POST needs the session's CSRF token;
//! every order page and action first checks that the order's store is the session's
//! store (403 otherwise, before the order is read). Actions answer with a redirect to the
//! order page (post/redirect/get) carrying a one-time message, and name the signed-in
//! staff member to the engine.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Redirect, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
    routing::{get, post},
};
use pickline_engine::{
    AllocateOutcome, Canceller, CollectOutcome, Engine, OrderId, OrderRejection, OrderStatus,
    ReadyOutcome, ShortLine, ShortPickResolution, ShortReport, ShortReportOutcome,
    TransitionOutcome, VerifyCodeOutcome,
    pickup_code::{QrPayload, StaffId, VerifyOutcome},
};
use tokio_stream::{StreamExt as _, wrappers::BroadcastStream};

use super::{
    PageError, Web,
    auth::{self, Flash, Session},
    blocking,
    live::Change,
    now, views,
};

pub(super) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/staff", get(|| async { Redirect::to("/staff/queue") }))
        .route("/staff/sign-in", get(sign_in_page).post(sign_in))
        .route("/staff/sign-out", post(sign_out))
        .route("/staff/queue", get(queue))
        .route("/staff/events", get(events))
        .route("/staff/orders/{order}", get(order_page))
        .route("/staff/orders/{order}/receipt", get(receipt))
        .route("/staff/orders/{order}/{action}", post(action))
}

/// The signed-in session of a request, with its id.
fn session(web: &Web, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = auth::cookie_value(headers, auth::SESSION_COOKIE)?;
    let s = web.sessions.get(&id)?;
    Some((id, s))
}

fn to_sign_in() -> Response {
    Redirect::to("/staff/sign-in").into_response()
}

/// Whether cookies must be `Secure`: configured, or the request came over TLS through a
/// proxy.
fn secure(web: &Web, headers: &HeaderMap) -> bool {
    web.config.cookie_secure
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The order a path names (`O<store>-<seq>`), checked against the session's store
/// before anything about it is read.
fn authorize(engine: &Engine, session: &Session, text: &str) -> Result<OrderId, PageError> {
    let order = OrderId::parse(text).ok_or(PageError::NotFound)?;
    match engine.store_def(order.store()) {
        Some(def) if def.external_id == session.store => Ok(order),
        _ => Err(PageError::Forbidden),
    }
}

fn staff_id(session: &Session) -> Result<StaffId, PageError> {
    StaffId::new(&session.staff).map_err(|e| PageError::Internal(e.to_string()))
}

#[derive(serde::Deserialize)]
struct PartQuery {
    part: Option<String>,
}

fn is_live_part(q: &PartQuery) -> bool {
    q.part.as_deref() == Some("live")
}

async fn sign_in_page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if session(&web, &headers).is_some() {
        return Redirect::to("/staff/queue").into_response();
    }
    sign_in_form(&web, &headers, StatusCode::OK, None)
}

fn sign_in_form(
    web: &Web,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let Ok(csrf) = auth::random_token() else {
        return PageError::Internal("no random source".into()).into_response();
    };
    let cookie = auth::set_cookie(
        auth::SIGN_IN_COOKIE,
        &csrf,
        auth::SIGN_IN_FORM_TTL,
        secure(web, headers),
    );
    let mut response = (status, views::sign_in(&csrf, error)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(serde::Deserialize)]
struct SignInForm {
    name: Option<String>,
    password: Option<String>,
    csrf: Option<String>,
}

async fn sign_in(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let expected = auth::cookie_value(&headers, auth::SIGN_IN_COOKIE).unwrap_or_default();
    if !auth::tokens_match(&expected, f.csrf.as_deref().unwrap_or_default()) {
        return PageError::Csrf.into_response();
    }
    let name = f.name.unwrap_or_default().trim().to_owned();
    let password = f.password.unwrap_or_default();
    if name.is_empty() || name.len() > super::config::STAFF_NAME_LEN_MAX || password.len() > 1024 {
        return sign_in_form(
            &web,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password."),
        );
    }
    if let Err(wait) = web.limiter.check(&name) {
        let text = format!(
            "Too many wrong passwords for this name. Try again in {} minutes.",
            wait.as_secs().div_ceil(60).max(1)
        );
        return sign_in_form(&web, &headers, StatusCode::TOO_MANY_REQUESTS, Some(&text));
    }
    let staff = web.config.staff.iter().find(|s| s.name == name).cloned();
    let hash = staff.as_ref().map_or_else(
        || auth::dummy_hash().to_owned(),
        |s| s.password_hash.clone(),
    );
    let Ok(_permit) = web.verifying.acquire().await else {
        return PageError::Unavailable.into_response();
    };
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&hash, &password))
        .await
        .unwrap_or(false);
    let Some(staff) = staff.filter(|_| ok) else {
        web.limiter.failed(&name);
        tracing::info!(staff = %name, "staff sign-in refused");
        return sign_in_form(
            &web,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password."),
        );
    };
    web.limiter.succeeded(&name);
    let ttl = Duration::from_millis(web.config.session_ttl_ms);
    let id = match web.sessions.start(&staff, ttl) {
        Ok(id) => id,
        Err(e) => return PageError::Internal(e).into_response(),
    };
    tracing::info!(staff = %staff.name, store = %staff.store, "staff signed in");
    let secure = secure(&web, &headers);
    let mut response = Redirect::to("/staff/queue").into_response();
    for cookie in [
        auth::set_cookie(auth::SESSION_COOKIE, &id, ttl, secure),
        auth::set_cookie(auth::SIGN_IN_COOKIE, "", Duration::ZERO, secure),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn sign_out(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Some((id, s)) = session(&web, &headers) else {
        return to_sign_in();
    };
    if !auth::tokens_match(&s.csrf, f.csrf.as_deref().unwrap_or_default()) {
        return PageError::Csrf.into_response();
    }
    web.sessions.end(&id);
    let mut response = to_sign_in();
    let cookie = auth::set_cookie(
        auth::SESSION_COOKIE,
        "",
        Duration::ZERO,
        secure(&web, &headers),
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

async fn queue(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<PartQuery>,
) -> Response {
    let Some((id, mut s)) = session(&web, &headers) else {
        return to_sign_in();
    };
    let db = match web.db() {
        Ok(db) => db,
        Err(e) => return e.into_response(),
    };
    match views::QueueModel::read(db.engine(), &s.store, now(), &web.live) {
        Ok(model) if is_live_part(&q) => views::queue_live(&model).into_response(),
        Ok(model) => {
            s.flash = web.sessions.take_flash(&id);
            views::queue_page(&model, &s).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn events(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let Some((_, s)) = session(&web, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let db = match web.db() {
        Ok(db) => db,
        Err(e) => return e.into_response(),
    };
    let Some(store) = db.engine().store_id(&s.store) else {
        return PageError::NotFound.into_response();
    };
    let stream = BroadcastStream::new(web.live.subscribe()).filter_map(move |change| {
        let event = match change {
            Ok(Change::Order { order, status }) if order.store() == store => SseEvent::default()
                .event("order")
                .data(format!("{order} {}", views::status_word(status))),
            Ok(Change::Order { .. }) => return None,
            Ok(Change::Resync) | Err(_) => SseEvent::default().event("resync").data("resync"),
        };
        Some(event)
    });
    sse(web.until_closed(stream))
}

/// A server-sent-event response with keep-alives (proxies close idle streams).
pub(super) fn sse(
    stream: impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
) -> Response {
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn order_page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(order): Path<String>,
    Query(q): Query<PartQuery>,
) -> Response {
    let Some((id, mut s)) = session(&web, &headers) else {
        return to_sign_in();
    };
    let result = (|| {
        let db = web.db()?;
        let engine = db.engine();
        let order = authorize(engine, &s, &order)?;
        let model = views::OrderModel::read(engine, order, now(), web.live.links())?;
        Ok::<_, PageError>(if is_live_part(&q) {
            views::order_live(&model, &s).into_response()
        } else {
            s.flash = web.sessions.take_flash(&id);
            views::order_page(&model, &s).into_response()
        })
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn receipt(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(order): Path<String>,
) -> Response {
    let Some((_, s)) = session(&web, &headers) else {
        return to_sign_in();
    };
    let result = (|| {
        let db = web.db()?;
        let engine = db.engine();
        let order = authorize(engine, &s, &order)?;
        match engine.order_receipt(order) {
            Some(Ok(r)) => Ok(views::receipt_page(
                &r,
                Some(&format!("/staff/orders/{order}")),
            )),
            Some(Err(e)) => Err(PageError::Internal(e.to_string())),
            None => Err(PageError::NotFound),
        }
    })();
    match result {
        Ok(page) => page.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn action(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((order, action)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some((id, s)) = session(&web, &headers) else {
        return to_sign_in();
    };
    if !auth::tokens_match(&s.csrf, form.get("csrf").map_or("", String::as_str)) {
        return PageError::Csrf.into_response();
    }
    let result = async {
        let db = web.db()?;
        let order = authorize(db.engine(), &s, &order)?;
        let staff = staff_id(&s)?;
        let engine = db.engine().clone();
        let flash = blocking(move || act(&engine, order, &action, &form, &staff)).await?;
        Ok::<_, PageError>((order, flash))
    }
    .await;
    match result {
        Ok((order, flash)) => {
            tracing::info!(staff = %s.staff, %order, outcome = %flash.text, "staff action");
            web.sessions.flash(&id, flash);
            Redirect::to(&format!("/staff/orders/{order}")).into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn ok(text: impl Into<String>) -> Flash {
    Flash {
        error: false,
        text: text.into(),
    }
}

fn refused(text: impl Into<String>) -> Flash {
    Flash {
        error: true,
        text: text.into(),
    }
}

/// The words for a refused action.
fn rejection_text(r: &OrderRejection) -> String {
    match r {
        OrderRejection::UnknownOrder => "This order is no longer known.".into(),
        OrderRejection::IllegalTransition { from } => {
            format!("Not possible: the order is {}.", views::status_word(*from))
        }
        OrderRejection::NoSuchLine => "The order has no line of that item.".into(),
        OrderRejection::NotShort { line_qty } => {
            format!("That is not short: the line needs {line_qty}.")
        }
        OrderRejection::NotLocked => "The code check is not locked.".into(),
        OrderRejection::NothingLeft => "Nothing is left on this order.".into(),
        OrderRejection::PickupWindowOpen { ends_at } => format!(
            "The pickup window is still open (until {}).",
            views::utc_time(ends_at.as_ms())
        ),
    }
}

fn code_text(v: &VerifyOutcome) -> Flash {
    match v {
        VerifyOutcome::Accepted => ok("Code is right. Hand the order over."),
        VerifyOutcome::Wrong { attempts_left } => refused(format!(
            "Wrong code. {attempts_left} attempt{} left.",
            if *attempts_left == 1 { "" } else { "s" }
        )),
        VerifyOutcome::WrongNowLocked => {
            refused("Wrong code. The code check is now locked; a manager can unlock it.")
        }
        VerifyOutcome::Locked => refused("The code check is locked; a manager can unlock it."),
        VerifyOutcome::AlreadyAccepted => refused("The code was already used."),
        VerifyOutcome::Malformed(e) => refused(format!("That is not a pickup code ({e}).")),
    }
}

/// The code in what was typed or scanned: a code, or a pickup QR payload of this order.
fn presented_code(order: OrderId, input: &str) -> Result<String, Flash> {
    let input = input.trim();
    if input.starts_with(pickline_engine::pickup_code::QR_PAYLOAD_PREFIX) {
        return match QrPayload::parse(input) {
            Ok(qr) if qr.order_id() == order.to_string() => Ok(qr.code().to_string()),
            Ok(_) => Err(refused("That QR code belongs to another order.")),
            Err(e) => Err(refused(format!("That QR code cannot be read ({e})."))),
        };
    }
    Ok(input.to_owned())
}

fn transition(outcome: TransitionOutcome, done: impl FnOnce(OrderStatus) -> String) -> Flash {
    match outcome {
        TransitionOutcome::Done { status } => ok(done(status)),
        TransitionOutcome::Rejected(r) => refused(rejection_text(&r)),
    }
}

fn entropy() -> Result<[u8; 8], PageError> {
    use rand::TryRng as _;
    let mut bytes = [0u8; 8];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| PageError::Internal(format!("OS random source failed: {e}")))?;
    Ok(bytes)
}

/// Applies one action; business refusals are messages, errors are for the log and misuse.
fn act(
    engine: &Engine,
    order: OrderId,
    action: &str,
    form: &HashMap<String, String>,
    staff: &StaffId,
) -> Result<Flash, PageError> {
    let now = now();
    let field = |k: &str| form.get(k).map_or("", |v| v.as_str());
    Ok(match action {
        "start" => transition(engine.start_picking(order, staff, now)?, |_| {
            format!("Picking started by {staff}.")
        }),
        "ready" => match engine.mark_ready(order, staff, entropy()?, now)? {
            ReadyOutcome::Ready { .. } => ok(format!(
                "Marked ready by {staff}. The customer's page now shows the pickup code."
            )),
            ReadyOutcome::Rejected(r) => refused(rejection_text(&r)),
        },
        "verify" => match presented_code(order, field("code")) {
            Err(flash) => flash,
            Ok(code) => match engine.verify_code(order, &code, staff, now)? {
                VerifyCodeOutcome::Code(v) => code_text(&v),
                VerifyCodeOutcome::Rejected(r) => refused(rejection_text(&r)),
            },
        },
        "collect" => match presented_code(order, field("code")) {
            Err(flash) => flash,
            Ok(code) => match engine.collect(order, &code, staff, now)? {
                CollectOutcome::Collected { receipt, .. } => match *receipt {
                    Ok(r) => ok(format!(
                        "Collected, handed over by {staff}. Receipt {}.",
                        r.receipt_number()
                    )),
                    Err(_) => ok(format!("Collected, handed over by {staff}.")),
                },
                CollectOutcome::Code(v) => code_text(&v),
                CollectOutcome::Rejected(r) => refused(rejection_text(&r)),
            },
        },
        "unlock" => transition(engine.staff_override(order, staff, now)?, |_| {
            format!("Code check unlocked by {staff}.")
        }),
        "no-show" => transition(engine.no_show(order, staff, now)?, |_| {
            format!("Recorded as not collected (no-show) by {staff}.")
        }),
        "cancel" => transition(
            engine.cancel_order(order, &Canceller::Store(staff.clone()), now)?,
            |_| format!("Cancelled by {staff}; the units are available again."),
        ),
        "short" => short(engine, order, form, staff, now)?,
        _ => return Err(PageError::NotFound),
    })
}

fn short(
    engine: &Engine,
    order: OrderId,
    form: &HashMap<String, String>,
    staff: &StaffId,
    now: pickline_engine::Timestamp,
) -> Result<Flash, PageError> {
    let field = |k: &str| form.get(k).map_or("", |v| v.as_str());
    let sku = field("sku").to_owned();
    let Ok(found) = field("found").trim().parse::<u32>() else {
        return Ok(refused("Enter how many units you found (a whole number)."));
    };
    let resolution = match field("resolution") {
        "reallocate" => ShortPickResolution::Reallocate,
        "cancel" => ShortPickResolution::CancelLine,
        _ => return Ok(refused("Choose what happens to the missing units.")),
    };
    let line = ShortLine {
        sku: sku.clone(),
        found,
        resolution,
    };
    let report = ShortReport {
        order,
        lines: vec![line],
        staff: staff.clone(),
    };
    let (status, missing) = match engine.report_short(&report, now) {
        Ok(ShortReportOutcome::Done { status, missing }) => {
            (status, missing.first().copied().unwrap_or(0))
        }
        Ok(ShortReportOutcome::Rejected { rejection, .. }) => {
            return Ok(refused(rejection_text(&rejection)));
        }
        Err(pickline_engine::EngineError::InvalidRequest { why, .. }) => {
            return Ok(refused(why));
        }
        Err(e) => return Err(e.into()),
    };
    let mut text = format!("{missing} unit(s) of {sku} reported missing by {staff}.");
    if status == OrderStatus::Cancelled {
        text.push_str(" Nothing is left: the order is cancelled.");
    }
    if resolution == ShortPickResolution::Reallocate && missing > 0 {
        text.push(' ');
        text.push_str(&reallocate(engine, order, &sku, found, missing, now)?);
    }
    Ok(ok(text))
}

/// Holds the missing units at the nearest other stores with the engine's policy
/// ([`Engine::reallocate_short`]: the rules of Allocate, split allowed, this store
/// excluded, keyed so that a repeated report holds once).
fn reallocate(
    engine: &Engine,
    order: OrderId,
    sku: &str,
    found: u32,
    missing: u32,
    now: pickline_engine::Timestamp,
) -> Result<String, PageError> {
    let (_, outcome) = engine.reallocate_short(
        order,
        sku,
        (found, missing),
        pickline_engine::REALLOCATE_DISTANCE_KM_DEFAULT,
        now,
    )?;
    Ok(match outcome {
        AllocateOutcome::Allocated { parts, .. } => {
            let at: Vec<String> = parts
                .iter()
                .map(|p| format!("{} ({:.1} km)", p.store_external_id, p.distance_km))
                .collect();
            format!("Missing units held at {}.", at.join(", "))
        }
        AllocateOutcome::Rejected { .. } => {
            "No store nearby has the missing units; they are dropped from the order.".into()
        }
        AllocateOutcome::InFlight => "Re-allocation is already running.".into(),
    })
}
