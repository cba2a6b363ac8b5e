"""A Python OMS client against a running Pickline server, through stubs generated from
the same .proto files: store, stock, hold, confirm, order, ready, verify code, collect,
and the receipt. Exits non-zero with a message on the first mismatch.

Usage: scenario.py <host:port> <stub dir>; tokens come from PICKLINE_*_TOKEN variables.
"""

import json
import os
import sys


def main() -> None:
    addr, stubs = sys.argv[1], sys.argv[2]
    sys.path.insert(0, stubs)
    import grpc
    from pickline.v1 import (
        common_pb2,
        hold_pb2,
        hold_pb2_grpc,
        inventory_pb2,
        inventory_pb2_grpc,
        pickup_pb2,
        pickup_pb2_grpc,
        store_pb2,
        store_pb2_grpc,
    )

    def md(var):
        return (("authorization", "Bearer " + os.environ[var]),)

    admin, checkout = md("PICKLINE_ADMIN_TOKEN"), md("PICKLINE_CHECKOUT_TOKEN")
    pos, staff = md("PICKLINE_POS_TOKEN"), md("PICKLINE_STAFF_TOKEN")

    def check(cond, what):
        if not cond:
            sys.exit("interop check failed: " + what)

    with grpc.insecure_channel(addr) as channel:
        stores = store_pb2_grpc.StoreServiceStub(channel)
        inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        holds = hold_pb2_grpc.HoldServiceStub(channel)
        pickups = pickup_pb2_grpc.PickupServiceStub(channel)

        r = stores.UpsertStore(
            store_pb2.UpsertStoreRequest(
                idempotency_key="py-store",
                store=store_pb2.StoreIdentity(
                    store_id="S1",
                    name="Python Store",
                    location=common_pb2.GeoPoint(latitude_deg=48.14, longitude_deg=11.58),
                    time_zone="Europe/Berlin",
                    status=store_pb2.STORE_STATUS_OPEN,
                ),
            ),
            metadata=admin,
        )
        check(r.created, "store created")

        r = inventory.ApplyPosEvents(
            inventory_pb2.ApplyPosEventsRequest(
                idempotency_key="py-stock",
                events=[
                    inventory_pb2.PosEvent(
                        pos_event_id="py-recv-1",
                        store_id="S1",
                        sku="MUG",
                        occurred_at_ms=1,
                        delta=inventory_pb2.PosDelta(
                            kind=inventory_pb2.POS_DELTA_KIND_RECEIVE, qty=4
                        ),
                    )
                ],
            ),
            metadata=pos,
        )
        check(r.outcomes[0].result == inventory_pb2.POS_EVENT_RESULT_APPLIED, "stock applied")
        check(r.outcomes[0].cell.atp == 4, "atp 4 after receive")

        r = holds.Hold(
            hold_pb2.HoldRequest(
                idempotency_key="py-cart",
                store_id="S1",
                lines=[common_pb2.Line(sku="MUG", qty=3)],
            ),
            metadata=checkout,
        )
        check(r.WhichOneof("outcome") == "granted", "hold granted")
        hold_id = r.granted.hold_id

        r = holds.Hold(
            hold_pb2.HoldRequest(
                idempotency_key="py-cart-2",
                store_id="S1",
                lines=[common_pb2.Line(sku="MUG", qty=2)],
            ),
            metadata=checkout,
        )
        check(r.WhichOneof("outcome") == "rejected", "second hold rejected")
        short = r.rejected.shortages[0]
        check((short.sku, short.requested, short.available) == ("MUG", 2, 1), "shortage detail")

        r = holds.Confirm(
            hold_pb2.ConfirmRequest(idempotency_key="py-confirm", hold_id=hold_id),
            metadata=checkout,
        )
        check(r.WhichOneof("outcome") == "confirmed", "hold confirmed")

        r = pickups.CreateOrder(
            pickup_pb2.CreateOrderRequest(
                idempotency_key="py-order",
                hold_id=hold_id,
                channel=pickup_pb2.CHANNEL_WOOCOMMERCE,
                channel_order_id="wc-77",
                customer=pickup_pb2.CustomerContact(phone="+4915112345678", sms_consent=True),
                lines=[
                    pickup_pb2.PricedLine(sku="MUG", qty=3, unit_price_minor=899, title="Mug")
                ],
                currency="EUR",
            ),
            metadata=checkout,
        )
        check(r.WhichOneof("outcome") == "order", "order created")
        order_id = r.order.order_id

        r = pickups.StartPicking(
            pickup_pb2.StartPickingRequest(
                idempotency_key="py-pick", order_id=order_id, staff_id="ben"
            ),
            metadata=staff,
        )
        check(r.order.state == pickup_pb2.ORDER_STATE_PICKING, "picking")

        r = pickups.MarkReady(
            pickup_pb2.MarkReadyRequest(
                idempotency_key="py-ready", order_id=order_id, staff_id="ben"
            ),
            metadata=staff,
        )
        check(r.order.state == pickup_pb2.ORDER_STATE_READY, "ready")
        code = r.pickup_code

        r = pickups.VerifyCode(
            pickup_pb2.VerifyCodeRequest(
                idempotency_key="py-verify", order_id=order_id, staff_id="ben", code=code
            ),
            metadata=staff,
        )
        check(r.WhichOneof("outcome") == "verified", "code verified")

        r = pickups.Collect(
            pickup_pb2.CollectRequest(
                idempotency_key="py-collect", order_id=order_id, staff_id="ben", code=code
            ),
            metadata=staff,
        )
        check(r.WhichOneof("outcome") == "collected", "collected")
        check(r.collected.order.state == pickup_pb2.ORDER_STATE_COLLECTED, "state collected")
        receipt = r.collected.receipt
        check(receipt.total.amount_minor == 2697, "receipt total 3 x 8.99")
        check(receipt.total.currency == "EUR", "receipt currency")
        doc = json.loads(receipt.json)
        check("Mug" in receipt.json and isinstance(doc, dict), "receipt json has the line")
        check("26.97" in receipt.text, "receipt text shows the total")

        try:
            pickups.ListOrders(pickup_pb2.ListOrdersRequest(store_id="S2"), metadata=staff)
            sys.exit("interop check failed: staff of S1 listed S2's orders")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED for S2")

    print("python interop: ok")


if __name__ == "__main__":
    main()
