"""The official Python client (opensearch-py), unchanged, against tenancy.

Usage: python opensearch_py_tenancy.py PROXY_URL ACME_TOKEN GLOBEX_TOKEN [compress]
With `compress`, the client runs with http_compress=True: gzip request
bodies and gzip answers.
Two tenants share the logical index `orders` (a shared placement); each
writes with the client's own helpers and sees only its own documents.
Run by crates/osproxy/tests/live/clients.rs.
"""
import sys

from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import AuthenticationException, NotFoundError, RequestError


def check(cond, what):
    if not cond:
        sys.exit(f"opensearch-py tenancy check failed: {what}")


COMPRESS = len(sys.argv) > 4 and sys.argv[4] == "compress"


def client(url, token):
    return OpenSearch(hosts=[url], headers={"Authorization": f"Bearer {token}"}, max_retries=0, timeout=30,
                      http_compress=COMPRESS)


def main():
    url, acme_token, globex_token = sys.argv[1], sys.argv[2], sys.argv[3]
    acme, globex = client(url, acme_token), client(url, globex_token)

    # The application creates its index when it is missing; for a shared
    # placement the second tenant finds it already there.
    for c in (acme, globex):
        if not c.indices.exists(index="orders"):
            c.indices.create(index="orders", body={"mappings": {"properties": {"item": {"type": "keyword"}}}})
    check(acme.indices.exists(index="orders") and globex.indices.exists(index="orders"), "index exists for both")
    mapping = acme.indices.get_mapping(index="orders")
    check(list(mapping) == ["orders"] and "_tenant" not in mapping["orders"]["mappings"]["properties"], f"mapping: {mapping}")

    r = acme.index(index="orders", id="1", body={"item": "anvil"}, refresh=True)
    check(r["_index"] == "orders" and r["_id"] == "1", f"index: {r}")
    globex.index(index="orders", id="1", body={"item": "globe"}, refresh=True)
    check(acme.get(index="orders", id="1")["_source"] == {"item": "anvil"}, "acme get")
    check(globex.get(index="orders", id="1")["_source"] == {"item": "globe"}, "globex get")

    ok, errors = helpers.bulk(acme, ({"_index": "orders", "_id": f"b{i}", "item": f"bolt {i}"} for i in range(50)), refresh=True)
    check(ok == 50 and not errors, f"bulk: {ok} {errors}")
    check(acme.count(index="orders")["count"] == 51, "acme count")
    check(globex.count(index="orders")["count"] == 1, "globex count")
    hits = acme.search(index="orders", body={"query": {"match_all": {}}, "size": 100})["hits"]["hits"]
    check(len(hits) == 51 and all(h["_index"] == "orders" and "_tenant" not in h["_source"] for h in hits), "acme search")

    # Aggregate: only acme's items are counted.
    aggs = acme.search(index="orders", body={"size": 0, "aggs": {"items": {"terms": {"field": "item", "size": 100}}}})
    buckets = {b["key"]: b["doc_count"] for b in aggs["aggregations"]["items"]["buckets"]}
    check("globe" not in buckets and buckets.get("anvil") == 1 and len(buckets) == 51, f"aggregation: {buckets}")
    # Scroll through everything acme has (helpers.scan: scroll, then clear).
    scanned = list(helpers.scan(acme, index="orders", query={"query": {"match_all": {}}}, size=10))
    check(len(scanned) == 51 and all(h["_index"] == "orders" for h in scanned), f"scan saw {len(scanned)}")
    check(len(list(helpers.scan(globex, index="orders", query={"query": {"match_all": {}}}, size=10))) == 1, "globex scan")
    acme.indices.refresh(index="orders")

    acme.update(index="orders", id="1", body={"doc": {"qty": 2}}, refresh=True)
    check(acme.get(index="orders", id="1")["_source"] == {"item": "anvil", "qty": 2}, "update")
    acme.delete(index="orders", id="1", refresh=True)
    try:
        acme.get(index="orders", id="1")
        check(False, "deleted document still readable")
    except NotFoundError:
        pass
    check(globex.get(index="orders", id="1")["_source"] == {"item": "globe"}, "globex's doc survives acme's delete")

    try:
        acme.search(index="orders", body={"aggs": {"all": {"global": {}}}})
        check(False, "a global aggregation was not refused")
    except RequestError as e:
        check(e.status_code == 400 and e.error == "construct_refused", f"refusal: {e.status_code} {e.error}")
    try:
        client(url, "not-a-token-at-all").search(index="orders")
        check(False, "an unknown token was accepted")
    except AuthenticationException:
        pass
    print("opensearch-py tenancy: all checks passed")


if __name__ == "__main__":
    main()
