//! `pickline wal verify` and `pickline wal dump` on the data directory of a server that
//! stopped cleanly (its last segment ends in preallocated zeros).

mod common;

use common::{ADMIN_TOKEN, TestServer, clients, with_token};
use pickline_engine::wal::{self, FileStorage};
use pickline_sidecar::{
    pb,
    walcmd::{self, WalCommand},
};

#[tokio::test]
async fn verify_and_dump_read_a_cleanly_stopped_data_directory() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    for i in 0..3 {
        c.stores
            .upsert_store(with_token(
                pb::UpsertStoreRequest {
                    idempotency_key: format!("store-{i}"),
                    store: Some(pb::StoreIdentity {
                        store_id: format!("S{i}"),
                        name: format!("Store {i}"),
                        location: Some(pb::GeoPoint {
                            latitude_deg: 52.0,
                            longitude_deg: 13.0,
                        }),
                        time_zone: "Europe/Berlin".into(),
                        status: pb::StoreStatus::Open as i32,
                        ..Default::default()
                    }),
                },
                ADMIN_TOKEN,
            ))
            .await
            .unwrap();
    }
    let dir = server.stop_keeping_dir().await;
    let data = dir.0.join("data");

    let storage = FileStorage::open(&data).unwrap();
    let report = wal::verify(&storage).unwrap();
    assert!(report.is_clean(), "{:?}", report.first_error);
    let records = report.record_count;
    assert!(records >= 3, "three stores were logged: {records}");
    // The segment runs ahead of its records with zeros: the case `dump` used to call
    // corruption.
    let segment = &report.segments[report.segments.len() - 1];
    assert!(segment.len_bytes > segment.valid_len_bytes, "{segment:?}");

    let dumped: Vec<_> = wal::dump(&storage)
        .unwrap()
        .collect::<Result<_, _>>()
        .expect("dump ends at the zeros without an error");
    assert_eq!(dumped.len() as u64, records);
    walcmd::run(&WalCommand::Dump {
        dir: data.clone(),
        headers_only: true,
    })
    .expect("wal dump exits 0 on a clean directory");
    walcmd::run(&WalCommand::Verify {
        dir: data.clone(),
        json: true,
    })
    .expect("wal verify exits 0 on a clean directory");

    let text = walcmd::verify_text("DIR", &report);
    assert!(text.starts_with("DIR: ok\n"), "{text}");
    assert!(
        text.contains(&format!("{records} record(s), LSN 1..={records}")),
        "{text}"
    );
    assert!(text.contains("problem    none"), "{text}");
    assert!(!text.contains("VerifyReport {"), "no debug dump: {text}");

    let json = walcmd::verify_json(&report);
    assert_eq!(json["clean"], true);
    assert_eq!(json["record_count"], records);
    assert_eq!(json["recovery"]["last_lsn"], records);
    assert_eq!(json["segments"][0]["first_lsn"], 1);

    // Damage in the middle of the written records: verify says so and fails.
    let name = &segment.file;
    let mut bytes = std::fs::read(data.join(name)).unwrap();
    let at = (segment.valid_len_bytes / 2) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(data.join(name), &bytes).unwrap();
    let report = wal::verify(&FileStorage::open(&data).unwrap()).unwrap();
    let text = walcmd::verify_text("DIR", &report);
    assert!(text.starts_with("DIR: NOT CLEAN\n"), "{text}");
    assert!(text.contains(name.as_str()), "{text}");
    assert_eq!(walcmd::verify_json(&report)["clean"], false);
    assert!(
        walcmd::run(&WalCommand::Verify {
            dir: data.clone(),
            json: false,
        })
        .is_err()
    );
}
