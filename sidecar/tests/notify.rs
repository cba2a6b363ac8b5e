//! Customer notifications end to end, against real servers: a real SMTP server (Python
//! aiosmtpd, `smtp_sink.py`), a local HTTP server standing in for the SMS provider's API,
//! the sidecar in process and as a real `pickline serve` process killed with SIGKILL.

mod common;

use std::{
    collections::BTreeMap,
    io::BufRead as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use common::{
    ADMIN_TOKEN, CHECKOUT_TOKEN, Clients, POS_TOKEN, STAFF_S1_TOKEN, ScratchDir, TestServer,
    clients, with_token,
};
use parking_lot::Mutex;
use pickline_sidecar::{
    config::Config,
    notify::{
        ManualClock, NotifyConfig, NotifyHandle,
        config::{Secret, SmtpTls},
        runner::Notifier,
    },
    pb::{self, notify_service_client::NotifyServiceClient},
};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- SMTP server

/// The aiosmtpd server of `smtp_sink.py`, stopped on drop.
struct Smtp {
    port: u16,
    dir: PathBuf,
    child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Smtp {
    fn start(dir: &Path, creds: Option<(&str, &str)>) -> Smtp {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let mut cmd = Command::new(common::python());
        cmd.arg(script).arg(port.to_string()).arg(dir);
        if let Some((u, p)) = creds {
            cmd.arg(u).arg(p);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python with aiosmtpd (scripts/test installs it into target/py)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "smtp_sink.py did not start (is aiosmtpd installed?)"
        );
        Smtp {
            port,
            dir: dir.to_owned(),
            child,
        }
    }

    /// Every message received so far, in arrival order.
    fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Messages whose Message-ID names `(order, kind)`.
    fn find(&self, order: u64, kind: &str) -> Vec<Value> {
        let id = format!("<{order}.{kind}.email@pickline.invalid>");
        self.messages()
            .into_iter()
            .filter(|m| m["message_id"].as_str() == Some(id.as_str()))
            .collect()
    }

    async fn wait(&self, order: u64, kind: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self.find(order, kind);
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} email for order {order}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- SMS API

#[derive(Clone, Debug)]
struct SmsRequest {
    path: String,
    authorization: String,
    idempotency_key: String,
    form: BTreeMap<String, String>,
}

/// A local HTTP server in the provider's place: records every request and answers with
/// the status it is set to (201 by default).
#[derive(Clone)]
struct SmsApi {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<SmsRequest>>>,
    status: Arc<AtomicU16>,
}

fn form_decode(body: &str) -> BTreeMap<String, String> {
    let dec = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (dec(k), dec(v)))
        .collect()
}

impl SmsApi {
    async fn start() -> SmsApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = SmsApi {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            status: Arc::new(AtomicU16::new(201)),
        };
        let state = api.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    state.requests.lock().push(SmsRequest {
                        path: uri.path().to_owned(),
                        authorization: h("authorization"),
                        idempotency_key: h("idempotency-key"),
                        form: form_decode(&body),
                    });
                    let status = state.status.load(Ordering::SeqCst);
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        if status < 300 {
                            r#"{"sid": "SM123", "status": "queued"}"#.to_owned()
                        } else {
                            r#"{"code": 20500, "message": "internal error"}"#.to_owned()
                        },
                    )
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        api
    }

    fn for_key(&self, key: &str) -> Vec<SmsRequest> {
        self.requests
            .lock()
            .iter()
            .filter(|r| r.idempotency_key == key)
            .cloned()
            .collect()
    }

    async fn wait(&self, key: &str, count: usize) -> Vec<SmsRequest> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self.for_key(key);
            if found.len() >= count {
                return found;
            }
            assert!(Instant::now() < deadline, "no SMS {key} (x{count})");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------- config and orders

fn notify_config(smtp: Option<&Smtp>, sms: Option<&SmsApi>) -> NotifyConfig {
    let mut n = NotifyConfig {
        enabled: true,
        poll_interval_ms: 10,
        backoff_base_ms: 20,
        backoff_max_ms: 100,
        max_attempts: 3,
        ..NotifyConfig::default()
    };
    match smtp {
        Some(s) => {
            n.email.host = "127.0.0.1".into();
            n.email.port = s.port;
            n.email.tls = SmtpTls::Plain;
            n.email.from = "Pickline Mitte <pickup@shop.example>".into();
        }
        None => n.email.enabled = false,
    }
    if let Some(api) = sms {
        n.sms.enabled = true;
        n.sms.base_url = format!("http://{}", api.addr);
        n.sms.account = "AC0123".into();
        n.sms.token = Some(Secret::new("sms-token-secret"));
        n.sms.from = "+15550001111".into();
        n.sms.rate_per_s = 1000;
    }
    n
}

async fn setup_store(c: &mut Clients) {
    c.stores
        .upsert_store(with_token(
            pb::UpsertStoreRequest {
                idempotency_key: "store-S1".into(),
                store: Some(pb::StoreIdentity {
                    store_id: "S1".into(),
                    name: "Pickline Mitte".into(),
                    location: Some(pb::GeoPoint {
                        latitude_deg: 52.52,
                        longitude_deg: 13.40,
                    }),
                    time_zone: "Europe/Berlin".into(),
                    status: pb::StoreStatus::Open as i32,
                    pickup_instructions: "Abholtheke am Eingang B".into(),
                    ..Default::default()
                }),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    c.inventory
        .apply_pos_events(with_token(
            pb::ApplyPosEventsRequest {
                idempotency_key: "stock".into(),
                events: vec![pb::PosEvent {
                    pos_event_id: "stock-1".into(),
                    store_id: "S1".into(),
                    sku: "MUG".into(),
                    occurred_at_ms: 1,
                    change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                        kind: pb::PosDeltaKind::Receive as i32,
                        qty: 100,
                    })),
                    order_ref: String::new(),
                }],
            },
            POS_TOKEN,
        ))
        .await
        .unwrap();
}

/// A confirmed order of one mug for `customer`; returns its id.
async fn order(c: &mut Clients, n: u32, customer: pb::CustomerContact) -> u64 {
    let held = c
        .holds
        .hold(with_token(
            pb::HoldRequest {
                idempotency_key: format!("hold-{n}"),
                store_id: "S1".into(),
                lines: vec![pb::Line {
                    sku: "MUG".into(),
                    qty: 1,
                }],
                expiry: Some(pb::hold_request::Expiry::TtlMs(7_200_000)),
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::hold_response::Outcome::Granted(h)) = held.outcome else {
        panic!("hold refused: {held:?}");
    };
    c.holds
        .confirm(with_token(
            pb::ConfirmRequest {
                idempotency_key: format!("confirm-{n}"),
                hold_id: h.hold_id,
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap();
    let created = c
        .pickups
        .create_order(with_token(
            pb::CreateOrderRequest {
                idempotency_key: format!("order-{n}"),
                hold_id: h.hold_id,
                channel: pb::Channel::Shopify as i32,
                channel_order_id: format!("#10{n:02}"),
                customer: Some(customer),
                lines: vec![pb::PricedLine {
                    sku: "MUG".into(),
                    qty: 1,
                    unit_price_minor: 990,
                    title: "Kaffeebecher".into(),
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
    let Some(pb::create_order_response::Outcome::Order(o)) = created.outcome else {
        panic!("order refused: {created:?}");
    };
    o.order_id
}

/// Picks and readies `order`; returns (pickup code, QR payload).
async fn ready(c: &mut Clients, order: u64) -> (String, String) {
    c.pickups
        .start_picking(with_token(
            pb::StartPickingRequest {
                idempotency_key: format!("pick-{order}"),
                order_id: order,
                staff_id: "anna".into(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap();
    let r = c
        .pickups
        .mark_ready(with_token(
            pb::MarkReadyRequest {
                idempotency_key: format!("ready-{order}"),
                order_id: order,
                staff_id: "anna".into(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    (r.pickup_code, r.qr_payload)
}

fn ada() -> pb::CustomerContact {
    pb::CustomerContact {
        name: "Ada".into(),
        email: "ada@example.com".into(),
        phone: "+4915112345678".into(),
        email_consent: true,
        sms_consent: true,
        locale: "de-DE".into(),
    }
}

/// The QR code in a PNG, decoded.
fn decode_qr(png_bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

// ---------------------------------------------------------------- tests

/// The ready-for-pickup email reaches a real SMTP server (with SMTP AUTH) with the right
/// code and a QR image that decodes to the order's payload; the SMS reaches the provider's
/// API with the right form and credentials; the customer's locale picks the German
/// templates; a customer without consent gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_and_sms_reach_real_servers_and_consent_is_respected() {
    let scratch = ScratchDir::new();
    let smtp = Smtp::start(&scratch.0.join("smtp"), Some(("mailer", "smtp-pass-123")));
    let sms = SmsApi::start().await;
    let mut nc = notify_config(Some(&smtp), Some(&sms));
    nc.email.username = "mailer".into();
    nc.email.password = Some(Secret::new("smtp-pass-123"));
    let server = TestServer::start(|c: &mut Config| c.notify = nc).await;
    let mut c = clients(&server).await;
    setup_store(&mut c).await;

    // First a customer who consented to nothing, then one who consented to both.
    let silent = order(
        &mut c,
        1,
        pb::CustomerContact {
            email: "nobody@example.com".into(),
            phone: "+4915100000000".into(),
            ..ada()
        }
        .with_consent(false),
    )
    .await;
    ready(&mut c, silent).await;
    let o = order(&mut c, 2, ada()).await;
    let (code, qr_payload) = ready(&mut c, o).await;

    let confirmation = &smtp.wait(o, "confirmation", 1).await[0];
    assert_eq!(confirmation["rcpt_tos"][0], "ada@example.com");
    assert_eq!(confirmation["auth_user"], "mailer");
    assert!(
        confirmation["subject"]
            .as_str()
            .unwrap()
            .contains("bestätigt")
    );
    assert!(
        confirmation["text"]
            .as_str()
            .unwrap()
            .contains("Abholtheke am Eingang B")
    );

    let email = &smtp.wait(o, "ready", 1).await[0];
    assert_eq!(email["rcpt_tos"][0], "ada@example.com");
    assert!(
        email["mail_from"]
            .as_str()
            .unwrap()
            .contains("pickup@shop.example")
    );
    let subject = email["subject"].as_str().unwrap();
    assert!(subject.contains("liegt zur Abholung bereit"), "{subject}");
    let text = email["text"].as_str().unwrap();
    assert!(text.contains(&format!("Abholcode: {code}")), "{text}");
    assert!(text.contains("Abholtheke am Eingang B"));
    let html = email["html"].as_str().unwrap();
    assert!(html.contains(&code) && html.contains("cid:qr"));
    let images = email["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["content_type"], "image/png");
    assert_eq!(images[0]["content_id"], "<qr>");
    let png_bytes = base64::engine::general_purpose::STANDARD
        .decode(images[0]["data_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decode_qr(&png_bytes), qr_payload);
    assert!(qr_payload.ends_with(&code.replace('-', "")), "{qr_payload}");

    let order_ref = pickline_engine::OrderId(o).to_string();
    let texts = sms.wait(&format!("{order_ref}/ready/sms"), 1).await;
    let r = &texts[0];
    assert_eq!(r.path, "/2010-04-01/Accounts/AC0123/Messages.json");
    let basic = base64::engine::general_purpose::STANDARD.encode("AC0123:sms-token-secret");
    assert_eq!(r.authorization, format!("Basic {basic}"));
    assert_eq!(r.form["To"], "+4915112345678");
    assert_eq!(r.form["From"], "+15550001111");
    assert!(r.form["Body"].contains(&code), "{:?}", r.form);
    sms.wait(&format!("{order_ref}/confirmation/sms"), 1).await;

    // Order 1's events came first: nothing for it, by either channel.
    assert!(
        smtp.messages()
            .iter()
            .all(|m| m["rcpt_tos"][0] != "nobody@example.com")
    );
    assert!(
        sms.requests
            .lock()
            .iter()
            .all(|r| r.form["To"] != "+4915100000000")
    );
    // Exactly one message per (order, kind, channel).
    assert_eq!(smtp.find(o, "ready").len(), 1);
    assert_eq!(sms.for_key(&format!("{order_ref}/ready/sms")).len(), 1);
    server.stop().await.unwrap();

    // The operator's preview renders the same template from a JSON context.
    let out = Command::new(env!("CARGO_BIN_EXE_pickline"))
        .args(["notify", "preview", "--kind", "ready", "--locale", "de-DE"])
        .arg(r#"{"pickup_code": "ABCDE-FGHJK", "store": {"name": "Mitte"}}"#)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("template: de/ready.j2"), "{stdout}");
    assert!(stdout.contains("Abholcode: ABCDE-FGHJK"));
    assert!(stdout.contains("--- sms (GSM-7, 1 segment"));
}

trait WithConsent {
    fn with_consent(self, yes: bool) -> Self;
}

impl WithConsent for pb::CustomerContact {
    fn with_consent(mut self, yes: bool) -> Self {
        self.email_consent = yes;
        self.sms_consent = yes;
        self
    }
}

/// A provider answering 5xx: retried with backoff, then dead-lettered; listed and shown
/// over gRPC; a replay once the provider is back delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_5xx_retries_then_dead_letter_then_replay_delivers() {
    let sms = SmsApi::start().await;
    sms.status.store(503, Ordering::SeqCst);
    let nc = notify_config(None, Some(&sms));
    let server = TestServer::start(|c: &mut Config| c.notify = nc).await;
    let mut c = clients(&server).await;
    setup_store(&mut c).await;
    let o = order(&mut c, 1, ada()).await;
    let key = format!("{}/confirmation/sms", pickline_engine::OrderId(o));
    sms.wait(&key, 3).await;

    let mut dlq = NotifyServiceClient::new(server.channel().await);
    let deadline = Instant::now() + PATIENCE;
    let letters = loop {
        let l = dlq
            .list_dead_letters(with_token(pb::ListNotifyDeadLettersRequest {}, ADMIN_TOKEN))
            .await
            .unwrap()
            .into_inner()
            .dead_letters;
        if !l.is_empty() {
            break l;
        }
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].key, key);
    assert_eq!(letters[0].attempts, 3);
    assert!(letters[0].error.contains("503"), "{}", letters[0].error);
    // Exactly max_attempts requests, none after it was given up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sms.for_key(&key).len(), 3);

    // Shown with the recipient masked, the message rendered; not for a checkout token.
    let shown = dlq
        .get_dead_letter(with_token(
            pb::GetNotifyDeadLetterRequest { key: key.clone() },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.to_masked, "***5678");
    assert!(shown.sms.contains("Pickline Mitte"), "{}", shown.sms);
    let denied = dlq
        .list_dead_letters(with_token(
            pb::ListNotifyDeadLettersRequest {},
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let bad = dlq
        .replay_dead_letter(with_token(
            pb::ReplayNotifyDeadLetterRequest {
                key: "nope".into(),
                idempotency_key: String::new(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // The provider is back: a replay delivers it, once.
    sms.status.store(201, Ordering::SeqCst);
    let replayed = dlq
        .replay_dead_letter(with_token(
            pb::ReplayNotifyDeadLetterRequest {
                key: key.clone(),
                idempotency_key: "r1".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(replayed.replayed);
    sms.wait(&key, 4).await;
    let deadline = Instant::now() + PATIENCE;
    while !dlq
        .list_dead_letters(with_token(pb::ListNotifyDeadLettersRequest {}, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .dead_letters
        .is_empty()
    {
        assert!(Instant::now() < deadline, "still dead after the replay");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sms.for_key(&key).len(), 4);
    server.stop().await.unwrap();
}

/// `pickline serve` in a child process.
struct Serve {
    child: Child,
    grpc: SocketAddr,
}

impl Serve {
    async fn start(config_file: &Path, grpc: SocketAddr) -> Serve {
        let child = Command::new(env!("CARGO_BIN_EXE_pickline"))
            .args(["serve", "--config"])
            .arg(config_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let serve = Serve { child, grpc };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
                .unwrap()
                .connect()
                .await
            {
                let mut stores = pb::store_service_client::StoreServiceClient::new(ch);
                if stores
                    .list_stores(with_token(pb::ListStoresRequest::default(), ADMIN_TOKEN))
                    .await
                    .is_ok()
                {
                    return serve;
                }
            }
            assert!(Instant::now() < deadline, "pickline serve did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn clients(&self) -> Clients {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Clients {
            stores: pb::store_service_client::StoreServiceClient::new(ch.clone()),
            inventory: pb::inventory_service_client::InventoryServiceClient::new(ch.clone()),
            holds: pb::hold_service_client::HoldServiceClient::new(ch.clone()),
            pickups: pb::pickup_service_client::PickupServiceClient::new(ch),
        }
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL of a real `pickline serve` after the SMTP server received the message and
/// before it answered (so before the notifier could record it as sent and acknowledge):
/// after the restart the message is sent again, with the same Message-ID, and the
/// pipeline goes on. At most a duplicate, never a loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_send_and_acknowledgement_loses_no_message() {
    let scratch = ScratchDir::new();
    let smtp = Smtp::start(&scratch.0.join("smtp"), None);
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut config = common::test_config(&scratch);
    config.grpc.listen = grpc;
    config.http.listen = http;
    config.notify = notify_config(Some(&smtp), None);
    let mut text = toml::to_string(&config).unwrap();
    for t in &config.tokens {
        let scopes: Vec<String> = t
            .scopes
            .iter()
            .map(|s| format!("{:?}", s.to_string()))
            .collect();
        text.push_str(&format!(
            "\n[[tokens]]\nname = {:?}\ntoken = {:?}\nscopes = [{}]\n",
            t.name,
            t.token,
            scopes.join(", ")
        ));
    }
    let file = scratch.0.join("pickline.toml");
    std::fs::write(&file, text).unwrap();

    let serve = Serve::start(&file, grpc).await;
    let mut c = serve.clients().await;
    setup_store(&mut c).await;
    // The SMTP server holds its answer for a minute once it has the message.
    std::fs::write(smtp.dir.join("delay"), "60").unwrap();
    let o = order(&mut c, 1, ada().with_consent(true)).await;
    smtp.wait(o, "confirmation", 1).await;
    drop(c);
    serve.sigkill();

    std::fs::remove_file(smtp.dir.join("delay")).unwrap();
    let serve = Serve::start(&file, grpc).await;
    let copies = smtp.wait(o, "confirmation", 2).await;
    assert!(copies.iter().all(|m| m["rcpt_tos"][0] == "ada@example.com"));
    // The pipeline goes on after the restart: the ready email, exactly once.
    let mut c = serve.clients().await;
    let (code, _) = ready(&mut c, o).await;
    let email = &smtp.wait(o, "ready", 1).await[0];
    assert!(email["text"].as_str().unwrap().contains(&code));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.find(o, "ready").len(), 1);
    assert_eq!(smtp.find(o, "confirmation").len(), 2);
}

/// The reminder goes out at the right store-local time on the day clocks spring forward
/// in New York, never in quiet hours, exactly once across restarts of the notifier (its
/// clock injected; the engine's time is what the test passes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminder_at_store_local_time_across_dst_and_not_in_quiet_hours() {
    use pickline_engine::{
        CreateOrder, Customer, HoldRequest, LineRequest, OrderId, OrderLineRequest, PosDelta,
        PosDeltaKind, StoreDef, Timestamp,
        durable::{DurableEngine, OpenOptions},
        wal::MemStorage,
    };
    let ms = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let scratch = ScratchDir::new();
    let sms = SmsApi::start().await;
    let db =
        Arc::new(DurableEngine::open(Arc::new(MemStorage::new()), OpenOptions::default()).unwrap());
    let e = db.engine();
    // 00:00 EST on 2026-03-08; at 02:00 clocks jump to 03:00 EDT.
    let t0 = ms("2026-03-08T05:00:00Z");
    let mut store = StoreDef::new("NY1", 40.7, -74.0, "America/New_York");
    store.name = "Pickline SoHo".into();
    e.define_store(store, Timestamp(t0)).unwrap();
    e.apply_delta(
        &PosDelta {
            store: "NY1".into(),
            sku: "MUG".into(),
            pos_event_id: "p1".into(),
            kind: PosDeltaKind::Receive,
            qty: 5,
            order_ref: None,
            pos_time: Timestamp(t0),
        },
        Timestamp(t0),
    )
    .unwrap();
    // The hold ends at 10:00 EDT (14:00Z). Lead 3 h = 07:00 EDT, in quiet hours
    // (21:00-08:00): moved to 08:00 EDT = 12:00Z (08:00 EST would be 13:00Z).
    let hold = e
        .hold(
            &HoldRequest::new("NY1", vec![LineRequest::new("MUG", 1)])
                .with_ttl_ms(ms("2026-03-08T14:00:00Z") - t0),
            Timestamp(t0),
        )
        .unwrap()
        .granted()
        .unwrap()
        .hold;
    e.confirm(hold, Timestamp(t0)).unwrap();
    let order = OrderId::from_hold(hold);
    e.create_order(
        &CreateOrder {
            hold,
            channel: "shopify".into(),
            channel_order_id: "#2001".into(),
            customer: Customer {
                name: Some("Grace".into()),
                locale: Some("en-US".into()),
                email: None,
                phone: Some("+12125550123".into()),
                sms_consent: true,
                email_consent: false,
            },
            lines: vec![OrderLineRequest {
                sku: "MUG".into(),
                qty: 1,
                unit_price_minor: 1200,
                description: "Mug".into(),
            }],
            currency: "USD".into(),
            idempotency_key: None,
        },
        Timestamp(t0),
    )
    .unwrap();
    e.confirm_order(order, Timestamp(t0)).unwrap();
    let mut nc = notify_config(None, Some(&sms));
    nc.reminder_lead_ms = 3 * 3_600_000;
    let clock = ManualClock::new(t0);
    let data = scratch.0.join("data");
    let start = |clock: Arc<ManualClock>| {
        let n = Notifier::open(
            nc.clone(),
            db.clone(),
            &data,
            clock,
            &NotifyHandle::default(),
        )
        .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(n.run(async {
            let _ = rx.await;
        }));
        (task, tx)
    };
    let reminder = format!("{order}/reminder/sms");
    let (task, stop) = start(clock.clone());
    sms.wait(&format!("{order}/confirmation/sms"), 1).await;
    // A restart before the reminder is due: it stays scheduled.
    let _ = stop.send(());
    task.await.unwrap();
    let (task, stop) = start(clock.clone());
    for t in [
        "2026-03-08T07:00:00Z",
        "2026-03-08T11:00:00Z",
        "2026-03-08T11:59:59Z",
    ] {
        clock.set(ms(t));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            sms.for_key(&reminder).is_empty(),
            "reminder sent at {t}, in quiet hours"
        );
    }
    clock.set(ms("2026-03-08T12:00:00Z"));
    let sent = sms.wait(&reminder, 1).await;
    assert!(
        sent[0].form["Body"].contains("2026-03-08 10:00"),
        "{:?}",
        sent[0].form
    );
    // And never again, across a restart and later times.
    let _ = stop.send(());
    task.await.unwrap();
    let (task, stop) = start(clock.clone());
    clock.set(ms("2026-03-08T13:00:00Z"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sms.for_key(&reminder).len(), 1);
    assert_eq!(sms.for_key(&format!("{order}/confirmation/sms")).len(), 1);
    let _ = stop.send(());
    task.await.unwrap();
}
