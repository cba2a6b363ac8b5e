//! The store staff tablet pages and the customer pages, on the HTTP listener of
//! `pickline serve`.
//!
//! - `/staff/...` ([`staff`]): sign-in, the live queue of a store's pickups grouped by
//!   slot with today's KPIs, order detail and every pickup action (start picking, short
//!   pick, ready, code check, hand-off, receipt, no-show, cancel, unlock).
//! - `/p/<token>` ([`customer`]): a customer's order status by an unguessable link
//!   ([`crate::order_link`]), its e-receipt, and `/stores`, the store finder.
//! - `/assets/...`: the stylesheet and the one small script, compiled into the binary.
//!
//! Pages are rendered on the server ([`views`], maud: every value is escaped); the
//! script only listens to server-sent events ([`live`]) and fetches the page's live
//! region again when something changed. Everything works without the script, by
//! reloading. `pickline bench pages` (a module of the binary, `src/bench/web.rs`) times
//! the [`views`] on an engine of its own.
//!
//! The pages call the engine directly ([`EngineSource`]), as the gRPC handlers do, and
//! depend on no other part of the sidecar. Engine calls that append run on a blocking
//! thread and return once durable, so a page after an action shows what is logged.
//!
//! Architecture invariant: no customer email or phone number is rendered on a page a
//! link can reach, or logged; staff pages show the customer's name only.

pub mod auth;
pub mod cli;
pub mod config;
pub mod customer;
pub mod live;
pub mod staff;
pub mod views;

use std::{path::Path, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use pickline_engine::{Timestamp, durable::DurableEngine};
use tokio::sync::Semaphore;

pub use config::WebConfig;

use crate::order_link::OrderLinks;

/// Where the pages get the engine: `None` until it has recovered.
pub type EngineSource = Arc<dyn Fn() -> Option<Arc<DurableEngine>> + Send + Sync>;

/// Largest form body accepted, bytes.
pub const FORM_BYTES_MAX: usize = 16 * 1024;

/// Shared by every page.
pub struct Web {
    config: WebConfig,
    source: EngineSource,
    live: Arc<live::Live>,
    sessions: auth::Sessions,
    limiter: auth::SignInLimiter,
    verifying: Semaphore,
    /// Set by [`Web::close`]: open event streams end, so the HTTP server can drain.
    closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web").finish_non_exhaustive()
    }
}

impl Web {
    /// The pages' state over `source`, with customer links keyed by the key in
    /// `data_dir`. Starts the live feed's reader (call inside a Tokio runtime).
    pub fn new(
        config: WebConfig,
        data_dir: &Path,
        source: EngineSource,
    ) -> std::io::Result<Arc<Web>> {
        let links = OrderLinks::open(data_dir)?;
        let live = live::Live::new(links);
        live::Live::spawn(&live, source.clone());
        Ok(Arc::new(Web {
            limiter: auth::SignInLimiter::new(
                config.sign_in_failures_max,
                Duration::from_millis(config.sign_in_window_ms),
            ),
            config,
            source,
            live,
            sessions: auth::Sessions::default(),
            verifying: Semaphore::new(auth::VERIFY_CONCURRENCY),
            closing: tokio::sync::watch::channel(false).0,
        }))
    }

    /// Ends every open event stream (browsers reconnect elsewhere or later). The server
    /// calls it before it stops the HTTP listener, whose graceful shutdown waits for
    /// every response to finish: a live page's stream would otherwise never finish.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// `changes` as server-sent events until [`Web::close`].
    fn until_closed(
        &self,
        changes: impl tokio_stream::Stream<Item = axum::response::sse::Event> + Send + 'static,
    ) -> impl tokio_stream::Stream<
        Item = Result<axum::response::sse::Event, std::convert::Infallible>,
    > + Send
    + 'static {
        use tokio_stream::StreamExt as _;
        let closing = tokio_stream::wrappers::WatchStream::new(self.closing.subscribe())
            .filter_map(|closed| closed.then_some(None));
        changes
            .map(Some)
            .merge(closing)
            .map_while(|event| event.map(Ok))
    }

    /// The recovered engine, or 503.
    fn db(&self) -> Result<Arc<DurableEngine>, PageError> {
        (self.source)().ok_or(PageError::Unavailable)
    }
}

/// The pages' routes over `web`.
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .merge(staff::routes())
        .merge(customer::routes())
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .layer(DefaultBodyLimit::max(FORM_BYTES_MAX))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web)
}

/// What every page may load and where it may be framed: its own origin's script and
/// stylesheet only (no inline script), never inside another site's frame (a staff action
/// cannot be clicked through a disguised page), forms only to itself.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'";

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The injected clock of the pages: wall time, read once per request.
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_ms(ms)
}

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Why a page cannot be shown. Each renders a short page with nothing of the order.
#[derive(Debug)]
pub enum PageError {
    /// No such page or order (400-class, nothing leaked).
    NotFound,
    /// The signed-in staff member's store is not the order's store.
    Forbidden,
    /// A form without its CSRF token, or with another session's.
    Csrf,
    /// The engine is still recovering.
    Unavailable,
    /// The request cannot be understood.
    BadRequest(String),
    /// Something failed inside (the log, the random source).
    Internal(String),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, text) = match &self {
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here.".to_owned(),
            ),
            PageError::Forbidden => (
                StatusCode::FORBIDDEN,
                "Not your store",
                "This order belongs to another store.".to_owned(),
            ),
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "The form was not sent from this session. Go back, reload and try again."
                    .to_owned(),
            ),
            PageError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Starting",
                "Pickline is starting; try again in a moment.".to_owned(),
            ),
            PageError::BadRequest(why) => (StatusCode::BAD_REQUEST, "Cannot do that", why.clone()),
            PageError::Internal(why) => {
                tracing::error!(error = %why, "web page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The action could not be completed. Try again.".to_owned(),
                )
            }
        };
        let mut response = (status, views::error_page(title, &text)).into_response();
        if matches!(self, PageError::Unavailable) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        response
    }
}

impl From<pickline_engine::EngineError> for PageError {
    fn from(e: pickline_engine::EngineError) -> Self {
        PageError::Internal(e.to_string())
    }
}

/// Runs an engine call that may append on a blocking thread (it waits for its commit).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PageError> + Send + 'static,
) -> Result<T, PageError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(PageError::Internal(format!("engine call failed: {e}"))))
}
