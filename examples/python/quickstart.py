"""A first real call to Pickline from Python (grpcio): register a store, receive stock,
hold, confirm, and read availability.

    python3 -m venv target/py
    target/py/bin/pip install grpcio grpcio-tools protobuf
    export PICKLINE_TOKEN=pkl_dev_...        # printed by `pickline serve --dev`
    target/py/bin/python examples/python/quickstart.py 127.0.0.1:50051

The stubs are generated at start from proto/pickline/v1/*.proto (grpc_tools.protoc) into
a temporary directory; in your own service, generate them once into your source tree.
Every call carries `authorization: Bearer <token>`. `sidecar/tests/quickstart.rs` runs
this file against a real server, so it cannot fall behind the contract.
"""

import os
import pathlib
import sys
import tempfile
import time


def generate_stubs(out_dir: str) -> None:
    """Generates pickline/v1/*_pb2.py and *_pb2_grpc.py into out_dir."""
    from grpc_tools import protoc

    proto_root = pathlib.Path(__file__).resolve().parents[2] / "proto"
    protos = sorted(str(p) for p in (proto_root / "pickline" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{proto_root}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main(args + protos) != 0:
        sys.exit("generating stubs from proto/ failed")
    sys.path.insert(0, out_dir)


def main() -> None:
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    token = os.environ.get("PICKLINE_TOKEN")
    if not token:
        sys.exit("set PICKLINE_TOKEN to the token `pickline serve --dev` printed")
    stubs = tempfile.TemporaryDirectory()
    generate_stubs(stubs.name)

    import grpc
    from pickline.v1 import (
        common_pb2,
        hold_pb2,
        hold_pb2_grpc,
        inventory_pb2,
        inventory_pb2_grpc,
        store_pb2,
        store_pb2_grpc,
    )

    auth = (("authorization", "Bearer " + token),)
    # Idempotency keys and POS event ids must be new for each run (a retry with the same
    # key gets the first answer back); the current time makes them so.
    run = str(time.time_ns() // 1_000_000)

    with grpc.insecure_channel(addr) as channel:
        stores = store_pb2_grpc.StoreServiceStub(channel)
        inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        holds = hold_pb2_grpc.HoldServiceStub(channel)

        # 1. Register a store (UpsertStore creates it or updates it).
        stores.UpsertStore(
            store_pb2.UpsertStoreRequest(
                idempotency_key="qs-store-" + run,
                store=store_pb2.StoreIdentity(
                    store_id="BER-01",
                    name="Berlin Mitte",
                    location=common_pb2.GeoPoint(latitude_deg=52.52, longitude_deg=13.405),
                    time_zone="Europe/Berlin",
                    status=store_pb2.STORE_STATUS_OPEN,
                ),
            ),
            metadata=auth,
        )

        # 2. Receive 10 mugs, as the store's POS would report them.
        r = inventory.ApplyPosEvents(
            inventory_pb2.ApplyPosEventsRequest(
                idempotency_key="qs-stock-" + run,
                events=[
                    inventory_pb2.PosEvent(
                        pos_event_id="qs-recv-" + run,
                        store_id="BER-01",
                        sku="MUG-350",
                        occurred_at_ms=int(run),
                        delta=inventory_pb2.PosDelta(
                            kind=inventory_pb2.POS_DELTA_KIND_RECEIVE, qty=10
                        ),
                    )
                ],
            ),
            metadata=auth,
        )
        on_hand = r.outcomes[0].cell.on_hand

        # 3. Hold 2 of them for a shopper's cart (the store's default hold time).
        r = holds.Hold(
            hold_pb2.HoldRequest(
                idempotency_key="qs-cart-" + run,
                store_id="BER-01",
                lines=[common_pb2.Line(sku="MUG-350", qty=2)],
            ),
            metadata=auth,
        )
        if r.WhichOneof("outcome") != "granted":
            sys.exit(f"hold rejected: {r.rejected}")
        hold_id = r.granted.hold_id

        # 4. Checkout completed: confirm the hold. It stays reserved until its expiry (the
        #    end of the pickup window), when the order's pickup or a release ends it sooner.
        r = holds.Confirm(
            hold_pb2.ConfirmRequest(idempotency_key="qs-confirm-" + run, hold_id=hold_id),
            metadata=auth,
        )
        if r.WhichOneof("outcome") != "confirmed":
            sys.exit(f"confirm refused: {r.rejected}")
        expires_at_ms = r.confirmed.expires_at_ms

        # 5. Read availability: ATP = on_hand - held - safety stock.
        cell = inventory.GetAvailability(
            inventory_pb2.GetAvailabilityRequest(store_id="BER-01", sku="MUG-350"),
            metadata=auth,
        ).cell

    print(
        f"hold {hold_id} confirmed until {expires_at_ms} ms; "
        f"MUG-350 now on_hand {on_hand}, held {cell.held}, atp {cell.atp}"
    )


if __name__ == "__main__":
    main()
