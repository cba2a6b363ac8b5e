//! The staff and customer pages in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, fantoccini) against a real server with real orders.
//!
//! Chromium and chromedriver come from Debian (`./scripts/test` installs them); without
//! them this test fails, it never skips. Screenshots (PNG) of the queue, the order page
//! and the customer's status page go to `target/screenshots/`.

mod common;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator};
use pickline_sidecar::{
    pb,
    web::{
        auth::hash_password,
        config::{PostalCode, StaffConfig, StoreInfo},
    },
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use common::{ADMIN_TOKEN, CHECKOUT_TOKEN, Clients, TestServer, clients, with_token};

const ALICE_PASSWORD: &str = "alice-at-the-desk";
const BOB_PASSWORD: &str = "bob-in-store-b";
/// How long the browser may take for anything that should happen promptly.
const WAIT: Duration = Duration::from_secs(15);

/// chromedriver on a free loopback port, stopped (by its own pid) on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Chromium is not installed: run ./scripts/test, which installs Debian's chromium and chromium-driver")
}

async fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "chromedriver is not installed: run ./scripts/test (Debian package chromium-driver)",
        );
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1024,1366", "--no-first-run"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("cannot start a Chromium session through chromedriver")
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(b: &Client, name: &str) {
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(screenshots().join(name), png).unwrap();
}

async fn wait_css(b: &Client, css: &str) -> fantoccini::elements::Element {
    b.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
}

/// Waits until the text of `css` contains `text`.
async fn wait_text(b: &Client, css: &str, text: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(e) = b.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && t.contains(text)
        {
            return t;
        }
        if tokio::time::Instant::now() > deadline {
            let found = match b.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => "<absent>".into(),
            };
            panic!("{css} never contained {text:?}; it reads {found:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Marks the page, so that a later check can tell it was not reloaded.
async fn mark_page(b: &Client) {
    b.execute("window.__pickline_marker = 42; return null;", vec![])
        .await
        .unwrap();
}

async fn still_same_page(b: &Client) -> bool {
    b.execute("return window.__pickline_marker === 42;", vec![])
        .await
        .unwrap()
        .as_bool()
        .unwrap_or(false)
}

async fn sign_in(b: &Client, addr: SocketAddr, name: &str, password: &str) {
    b.goto(&format!("http://{addr}/staff/sign-in"))
        .await
        .unwrap();
    type_into(b, "#name", name).await;
    b.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    b.find(Locator::Css("button[type=submit].primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(b, "h1", "Pickup queue").await;
}

/// Acts on `css` once it is there. The live region may be swapped by a server event between
/// finding the element and acting on it (a stale element, which nothing happens to): find
/// it again then.
async fn on_element<F, Fut>(b: &Client, css: &str, act: F)
where
    F: Fn(fantoccini::elements::Element) -> Fut,
    Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match act(wait_css(b, css).await).await {
            Ok(()) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("acting on {css}: {e}"),
        }
    }
}

/// Types `text` into `css` once it is there.
async fn type_into(b: &Client, css: &str, text: &str) {
    on_element(b, css, |e| async move { e.send_keys(text).await }).await;
}

/// Clicks `css` once it is there.
async fn click(b: &Client, css: &str) {
    on_element(b, css, |e| async move { e.click().await }).await;
}

// ------------------------------------------------------------------ server and data

async fn start() -> TestServer {
    let alice = hash_password(ALICE_PASSWORD).unwrap();
    let bob = hash_password(BOB_PASSWORD).unwrap();
    TestServer::start(move |config| {
        config.web.staff = vec![
            StaffConfig {
                name: "alice".into(),
                store: "S1".into(),
                password_hash: alice,
            },
            StaffConfig {
                name: "bob".into(),
                store: "S2".into(),
                password_hash: bob,
            },
        ];
        config.web.stores = vec![StoreInfo {
            store: "S1".into(),
            address: "Alexanderplatz 1, 10178 Berlin".into(),
        }];
        config.web.postal_codes = vec![PostalCode {
            code: "10178".into(),
            lat: 52.5219,
            lon: 13.4132,
        }];
    })
    .await
}

async fn upsert_store(c: &mut Clients, id: &str, lat: f64, lon: f64) {
    let store = pb::StoreIdentity {
        store_id: id.into(),
        name: format!("Store {id}"),
        location: Some(pb::GeoPoint {
            latitude_deg: lat,
            longitude_deg: lon,
        }),
        time_zone: "Europe/Berlin".into(),
        status: pb::StoreStatus::Open as i32,
        pickup_instructions: "Desk by entrance B".into(),
        ..Default::default()
    };
    c.stores
        .upsert_store(with_token(
            pb::UpsertStoreRequest {
                idempotency_key: format!("store-{id}"),
                store: Some(store),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
}

async fn receive(c: &mut Clients, store: &str, sku: &str, qty: u32) {
    c.inventory
        .apply_pos_events(with_token(
            pb::ApplyPosEventsRequest {
                idempotency_key: format!("receive-{store}-{sku}"),
                events: vec![pb::PosEvent {
                    pos_event_id: format!("receive-{store}-{sku}"),
                    store_id: store.into(),
                    sku: sku.into(),
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
        .unwrap();
}

/// A confirmed pickup order of 2 x MUG-350 at `store`; returns its id as pages show it.
async fn place_order(c: &mut Clients, store: &str, channel_order_id: &str) -> String {
    let held = c
        .holds
        .hold(with_token(
            pb::HoldRequest {
                idempotency_key: format!("cart-{channel_order_id}"),
                store_id: store.into(),
                lines: vec![pb::Line {
                    sku: "MUG-350".into(),
                    qty: 2,
                }],
                expiry: None,
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::hold_response::Outcome::Granted(h)) = held.outcome else {
        panic!("expected a grant: {held:?}");
    };
    let created = c
        .pickups
        .create_order(with_token(
            pb::CreateOrderRequest {
                idempotency_key: format!("order-{channel_order_id}"),
                hold_id: h.hold_id,
                channel: pb::Channel::Shopify as i32,
                channel_order_id: channel_order_id.into(),
                customer: Some(pb::CustomerContact {
                    name: "Ada Lovelace".into(),
                    email: "ada@example.com".into(),
                    phone: "+49 30 1234567".into(),
                    email_consent: true,
                    ..Default::default()
                }),
                lines: vec![pb::PricedLine {
                    sku: "MUG-350".into(),
                    qty: 2,
                    unit_price_minor: 1_250,
                    title: "Espresso mug 350 ml".into(),
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
        panic!("expected an order: {created:?}");
    };
    let id = pickline_engine::OrderId(order.order_id);
    id.to_string()
}

async fn order_state(c: &mut Clients, id: &str) -> pb::OrderState {
    let order = pickline_engine::OrderId::parse(id).unwrap();
    c.pickups
        .get_order(with_token(
            pb::GetOrderRequest {
                key: Some(pb::get_order_request::Key::OrderId(order.0)),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
        .state()
}

/// A raw HTTP/1.1 request with a cookie: status and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    form: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

// ------------------------------------------------------------------ the test

/// One browser session runs the whole flow (Chromium starts once: it dominates the time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_and_customer_pages_in_chromium() {
    let server = start().await;
    let addr = server.http_addr;
    let mut c = clients(&server).await;
    upsert_store(&mut c, "S1", 52.5219, 13.4132).await;
    upsert_store(&mut c, "S2", 52.5000, 13.3000).await;
    receive(&mut c, "S1", "MUG-350", 10).await;
    receive(&mut c, "S2", "MUG-350", 3).await;

    let driver = start_driver().await;
    let b = browser(&driver).await;
    // The flow runs as its own task so that the browser is closed even when it fails.
    let flow_task = tokio::spawn({
        let b = b.clone();
        async move {
            flow(&b, addr, &mut c).await;
            // A live page's event stream must not keep the server from stopping.
            b.goto(&format!("http://{addr}/staff/queue")).await.unwrap();
            wait_css(&b, "body[data-connected='1']").await;
            server.stop().await.unwrap();
        }
    });
    let result = flow_task.await;
    let _ = b.close().await;
    drop(driver);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn flow(b: &Client, addr: SocketAddr, c: &mut Clients) {
    // Sign-in: a wrong password is refused, the right one opens the queue.
    b.goto(&format!("http://{addr}/staff/sign-in"))
        .await
        .unwrap();
    type_into(b, "#name", "alice").await;
    b.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys("wrong password")
        .await
        .unwrap();
    click(b, "button[type=submit].primary").await;
    wait_text(b, ".flash.error", "Wrong name or password").await;
    sign_in(b, addr, "alice", ALICE_PASSWORD).await;
    wait_text(b, ".empty", "No open pickups").await;
    wait_css(b, "body[data-connected='1']").await;

    // A new order appears without a reload.
    mark_page(b).await;
    let order = place_order(c, "S1", "#1001").await;
    wait_css(b, &format!("a[data-order='{order}']")).await;
    assert!(still_same_page(b).await, "the queue updated in place");
    wait_text(b, "#count-confirmed", "1").await;
    screenshot(b, "staff-queue.png").await;

    // Order detail: start picking (named for alice).
    click(b, &format!("a[data-order='{order}']")).await;
    wait_text(b, "h1", "#1001").await;
    wait_text(b, "#order-status", "confirmed").await;
    click(b, "form[action$='/start'] button").await;
    wait_text(b, ".flash.ok", "Picking started by alice").await;
    wait_text(b, "#order-status", "picking").await;
    b.refresh().await.unwrap();
    wait_text(b, "#order-status", "picking").await;
    assert!(
        b.find(Locator::Css(".flash")).await.is_err(),
        "a message shows once"
    );

    // The customer's status page, open in a second window before the order is ready.
    let link = wait_css(b, "#customer-link")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert!(
        link.starts_with("/p/") && !link.contains(&order) && link.len() == 3 + 22,
        "{link}"
    );
    let staff_window = b.window().await.unwrap();
    let customer_window = b.new_window(true).await.unwrap().handle;
    b.switch_to_window(customer_window.clone()).await.unwrap();
    b.goto(&format!("http://{addr}{link}")).await.unwrap();
    wait_text(b, "#customer-state", "picking your order").await;
    wait_css(b, "body[data-connected='1']").await;
    let page = b.source().await.unwrap();
    assert!(
        !page.contains("ada@example.com") && !page.contains("1234567"),
        "no contact data"
    );
    assert!(page.contains("Alexanderplatz 1") && page.contains("Desk by entrance B"));
    mark_page(b).await;

    // Staff mark it ready; the customer's page shows the code without a reload.
    b.switch_to_window(staff_window.clone()).await.unwrap();
    click(b, "form[action$='/ready'] button").await;
    wait_text(b, ".flash.ok", "Marked ready by alice").await;
    screenshot(b, "staff-order.png").await;
    b.switch_to_window(customer_window.clone()).await.unwrap();
    let code = wait_css(b, "#pickup-code").await.text().await.unwrap();
    assert_eq!(code.len(), 11, "code {code:?}");
    assert!(still_same_page(b).await, "the status page updated in place");
    wait_css(b, "figure.qr svg").await;
    screenshot(b, "customer-status.png").await;

    // A wrong code (typed, Enter) is refused and counted; the right one hands over.
    b.switch_to_window(staff_window.clone()).await.unwrap();
    let wrong = if code.starts_with('A') {
        "BBBBB-BBBBB"
    } else {
        "AAAAA-AAAAA"
    };
    wait_css(b, "#code")
        .await
        .send_keys(&format!("{wrong}\n"))
        .await
        .unwrap();
    wait_text(b, ".flash.error", "Wrong code. 4 attempts left").await;
    wait_text(b, "#attempts", "Wrong codes: 1 of 5").await;
    type_into(b, "#code", &code).await;
    click(b, "#collect").await;
    wait_text(b, ".flash.ok", "Collected, handed over by alice").await;
    wait_text(b, "#order-status", "collected").await;
    click(b, "#receipt-link").await;
    wait_text(b, "#receipt-total", "25.00").await;
    assert_eq!(order_state(c, &order).await, pb::OrderState::Collected);

    // The customer's page follows to collected and offers the receipt.
    b.switch_to_window(customer_window.clone()).await.unwrap();
    wait_text(b, "#customer-state", "collected").await;
    click(b, "#receipt-link").await;
    wait_text(b, "#receipt-total", "25.00").await;
    b.close_window().await.unwrap();
    b.switch_to_window(staff_window).await.unwrap();

    // Store B's staff: 403 on store A's order, and nothing of it on the page.
    b.goto(&format!("http://{addr}/staff/queue")).await.unwrap();
    click(b, "form[action='/staff/sign-out'] button").await;
    sign_in(b, addr, "bob", BOB_PASSWORD).await;
    b.goto(&format!("http://{addr}/staff/orders/{order}"))
        .await
        .unwrap();
    wait_text(b, "h1", "Not your store").await;
    let page = b.source().await.unwrap();
    assert!(!page.contains("#1001") && !page.contains("Ada") && !page.contains("MUG-350"));
    let session = b.get_named_cookie("pkl_session").await.unwrap();
    assert!(session.http_only().unwrap_or(false), "HttpOnly");
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    let cookie = format!("pkl_session={}", session.value());
    let (status, body) = http(addr, "GET", &format!("/staff/orders/{order}"), &cookie, "").await;
    assert_eq!(status, 403);
    assert!(!body.contains("#1001") && !body.contains("Ada"));

    // A form without its CSRF token is refused, and changes nothing.
    let b_order = place_order(c, "S2", "#2001").await;
    let (status, _) = http(
        addr,
        "POST",
        &format!("/staff/orders/{b_order}/start"),
        &cookie,
        "",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = http(
        addr,
        "POST",
        &format!("/staff/orders/{b_order}/start"),
        &cookie,
        "csrf=forged",
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(order_state(c, &b_order).await, pb::OrderState::Confirmed);
    // With the session's token, bob may act on his own store's order, not on store A's.
    b.goto(&format!("http://{addr}/staff/orders/{b_order}"))
        .await
        .unwrap();
    let csrf = wait_css(b, "input[name=csrf]")
        .await
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let (status, _) = http(
        addr,
        "POST",
        &format!("/staff/orders/{order}/cancel"),
        &cookie,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = http(
        addr,
        "POST",
        &format!("/staff/orders/{b_order}/start"),
        &cookie,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(order_state(c, &b_order).await, pb::OrderState::Picking);

    // No session: sign-in; an unknown link: 404.
    let (status, _) = http(addr, "GET", "/staff/queue", "", "").await;
    assert_eq!(status, 303);
    let (status, _) = http(addr, "GET", "/p/AAAAAAAAAAAAAAAAAAAAAA", "", "").await;
    assert_eq!(status, 404);

    // The store finder: by postal code, nearest first, with distance.
    b.goto(&format!(
        "http://{addr}/stores?sku=MUG-350&qty=2&near=10178"
    ))
    .await
    .unwrap();
    let stores = wait_css(b, "#stores").await.text().await.unwrap();
    assert!(
        stores.contains("Store S1") && stores.contains("km away"),
        "{stores}"
    );
    let s1 = stores.find("Store S1").unwrap();
    let s2 = stores.find("Store S2").unwrap_or(usize::MAX);
    assert!(s1 < s2, "nearest first: {stores}");
}
