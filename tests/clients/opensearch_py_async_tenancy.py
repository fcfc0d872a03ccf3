"""The official Python client's async API (AsyncOpenSearch), unchanged, against tenancy.

Usage: python opensearch_py_async_tenancy.py PROXY_URL ACME_TOKEN GLOBEX_TOKEN
Two tenants share the logical index `orders`; each writes with the async
helpers and sees only its own documents. Compression is on (gzip request
bodies and answers). Run by crates/osproxy/tests/live/clients.rs.
"""
import asyncio
import sys

from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import AuthenticationException, NotFoundError, RequestError
from opensearchpy.helpers import async_bulk, async_scan


def check(cond, what):
    if not cond:
        sys.exit(f"opensearch-py async tenancy check failed: {what}")


def client(url, token):
    return AsyncOpenSearch(hosts=[url], headers={"Authorization": f"Bearer {token}"}, max_retries=0,
                           timeout=30, http_compress=True)


async def main():
    url, acme_token, globex_token = sys.argv[1], sys.argv[2], sys.argv[3]
    acme, globex = client(url, acme_token), client(url, globex_token)
    try:
        for c in (acme, globex):
            if not await c.indices.exists(index="orders"):
                await c.indices.create(index="orders", body={"mappings": {"properties": {
                    "item": {"type": "keyword"}, "n": {"type": "integer"}}}})
        r = await acme.index(index="orders", id="1", body={"item": "anvil", "n": 0}, refresh=True)
        check(r["_index"] == "orders" and r["_id"] == "1", f"index: {r}")
        await globex.index(index="orders", id="1", body={"item": "globe", "n": 0}, refresh=True)

        actions = ({"_index": "orders", "_id": f"b{i}", "item": "nut" if i % 2 == 0 else "bolt", "n": i}
                   for i in range(1, 201))
        ok, errors = await async_bulk(acme, actions, refresh=True)
        check(ok == 200 and not errors, f"async_bulk: {ok} {errors}")
        check((await acme.count(index="orders"))["count"] == 201, "acme count")
        check((await globex.count(index="orders"))["count"] == 1, "globex count")
        check((await acme.get(index="orders", id="1"))["_source"] == {"item": "anvil", "n": 0}, "acme get")

        found = await acme.search(index="orders", body={"size": 5, "query": {"range": {"n": {"gte": 1}}},
                                                        "aggs": {"items": {"terms": {"field": "item"}}}})
        check(found["hits"]["total"]["value"] == 200, f"search: {found['hits']['total']}")
        buckets = found["aggregations"]["items"]["buckets"]
        check([b["doc_count"] for b in buckets] == [100, 100], f"buckets: {buckets}")
        for h in found["hits"]["hits"]:
            check(h["_index"] == "orders" and ":" not in h["_id"] and "_tenant" not in h["_source"], f"hit {h}")

        r = await acme.update(index="orders", id="1", body={"doc": {"n": 7}}, refresh=True)
        check(r["result"] == "updated", f"update: {r}")
        docs = (await acme.mget(index="orders", body={"ids": ["1", "b2", "nope"]}))["docs"]
        check([d["found"] for d in docs] == [True, True, False], f"mget: {docs}")
        multi = await acme.msearch(body=[{"index": "orders"}, {"query": {"term": {"item": "anvil"}}},
                                         {"index": "orders"}, {"size": 0}])
        check([r["hits"]["total"]["value"] for r in multi["responses"]] == [1, 201], f"msearch: {multi}")
        scanned = [d async for d in async_scan(acme, index="orders", query={"query": {"match_all": {}}}, size=50)]
        check(len(scanned) == 201, f"async_scan saw {len(scanned)}")

        r = await acme.delete(index="orders", id="b1", refresh=True)
        check(r["result"] == "deleted", f"delete: {r}")
        r = await acme.delete_by_query(index="orders", body={"query": {"term": {"item": "nut"}}}, refresh=True)
        check(r["deleted"] == 100, f"delete_by_query: {r}")
        check((await acme.count(index="orders"))["count"] == 100, "acme count after deletes")
        check((await globex.count(index="orders"))["count"] == 1, "globex untouched")

        # Refusals are the client's usual exceptions.
        try:
            await globex.get(index="orders", id="b2")
            check(False, "globex read acme's document")
        except NotFoundError:
            pass
        try:
            await acme.search(index="orders", body={"aggs": {"s": {"scripted_metric": {"map_script": "state.x = 1"}}}})
            check(False, "a scripted metric was not refused")
        except RequestError as e:
            check(e.status_code == 400 and e.error, f"script refusal: {e}")
        bad = client(url, "not-a-valid-token-0123456789")
        try:
            await bad.count(index="orders")
            check(False, "a bad token was not refused")
        except AuthenticationException as e:
            check(e.status_code == 401, f"bad token: {e}")
        finally:
            await bad.close()
    finally:
        await acme.close()
        await globex.close()


asyncio.run(main())
