"""opensearch-py, unchanged, loading documents through osproxy while the
partition is held to a write limit: the refusals (429 too_many_requests)
are retried by the client (retry_on_status) and its bulk helper (with
backoff), and every document arrives, once.

Usage: python opensearch_py_limits.py PROXY_URL TOKEN DOCUMENTS
Run by crates/osproxy/tests/live/clients.rs.
"""
import sys
import time

from opensearchpy import OpenSearch, helpers


def check(cond, what):
    if not cond:
        sys.exit(f"opensearch-py limits check failed: {what}")


def main():
    url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = OpenSearch(hosts=[url], headers={"Authorization": f"Bearer {token}"},
                        retry_on_status=(429,), max_retries=3, timeout=30)
    actions = ({"_index": "orders", "_id": f"l{i}", "_source": {"item": "limited", "n": i}} for i in range(n))
    started = time.monotonic()
    ok = 0
    for success, info in helpers.streaming_bulk(client, actions, chunk_size=100, max_retries=10,
                                                initial_backoff=1, max_backoff=4, raise_on_error=True):
        check(success, f"an item failed: {info}")
        ok += 1
    took = time.monotonic() - started
    check(ok == n, f"{ok} of {n} acknowledged")
    # A refresh is a write too (writes_per_second): the load may have spent
    # the budget, and the transport retries a 429 at once, without waiting
    # for Retry-After, so wait the second it asks for.
    time.sleep(1.5)
    client.indices.refresh(index="orders")
    count = client.count(index="orders", body={"query": {"term": {"item": "limited"}}})["count"]
    check(count == n, f"{count} documents stored, {n} sent")
    got = client.mget(index="orders", body={"ids": ["l0", f"l{n // 2}", f"l{n - 1}"]})
    check(all(d["found"] for d in got["docs"]), f"sampled documents: {got}")
    print(f"{n} documents in {took:.1f} s")


if __name__ == "__main__":
    main()
