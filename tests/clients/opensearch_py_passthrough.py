"""The official Python client (opensearch-py), unchanged, through osproxy passthrough.

Usage: python opensearch_py_passthrough.py PROXY_URL DEAD_PROXY_URL INDEX [CA_CERTS]
With CA_CERTS, PROXY_URL is https:// and its certificate is verified
against that CA file.
Exits non-zero with a message on the first mismatch. Run by the live test
crates/osproxy/tests/live/clients.rs.
"""
import sys

from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import NotFoundError, TransportError


def check(cond, what):
    if not cond:
        sys.exit(f"opensearch-py check failed: {what}")


def main():
    url, dead_url, index = sys.argv[1], sys.argv[2], sys.argv[3]
    tls = {"ca_certs": sys.argv[4], "verify_certs": True} if len(sys.argv) > 4 else {}
    client = OpenSearch(hosts=[url], max_retries=0, timeout=30, **tls)

    info = client.info()
    check(info["version"]["distribution"] == "opensearch", f"info: {info}")

    # Sniffing finds osproxy's address in _nodes, not the node's own.
    # (Sniffed hosts carry no scheme: over https the client needs use_ssl.)
    ssl = {"use_ssl": True} if url.startswith("https://") else {}
    sniffer = OpenSearch(hosts=[url], max_retries=0, timeout=30, sniff_on_start=True, **tls, **ssl)
    sniffed = [c.host for c in sniffer.transport.connection_pool.connections]
    check(sniffed and all(h == url.rstrip("/") for h in sniffed), f"sniffed {sniffed}, expected {url}")
    check(sniffer.info()["version"]["distribution"] == "opensearch", "info through a sniffed connection")

    client.indices.create(index=index, body={"settings": {"number_of_shards": 1}})
    check(client.indices.exists(index=index), "indices.exists after create")
    r = client.index(index=index, id="1", body={"title": "one", "n": 1}, refresh=True)
    check(r["result"] == "created", f"index: {r}")
    check(client.get(index=index, id="1")["_source"] == {"title": "one", "n": 1}, "get")
    client.update(index=index, id="1", body={"doc": {"n": 2}}, refresh=True)
    check(client.get(index=index, id="1")["_source"]["n"] == 2, "update")
    try:
        client.get(index=index, id="missing")
        check(False, "get of a missing doc did not raise")
    except NotFoundError:
        pass

    ok, errors = helpers.bulk(client, ({"_index": index, "_id": str(i), "n": i} for i in range(2, 202)), refresh=True)
    check(ok == 200 and not errors, f"bulk: {ok} {errors}")
    check(client.count(index=index)["count"] == 201, "count after bulk (doc 1 and 200 bulk docs)")
    hits = client.search(index=index, body={"query": {"range": {"n": {"gte": 100}}}, "size": 0})
    check(hits["hits"]["total"]["value"] == 102, f"search: {hits['hits']['total']}")
    scanned = list(helpers.scan(client, index=index, query={"query": {"match_all": {}}}, size=50))
    check(len(scanned) == 201, f"scan (scroll) saw {len(scanned)} docs")
    multi = client.msearch(body=[{"index": index}, {"query": {"term": {"n": 5}}}, {"index": index}, {"size": 0}])
    check([r["hits"]["total"]["value"] for r in multi["responses"]] == [1, 201], f"msearch: {multi}")
    docs = client.mget(index=index, body={"ids": ["5", "nope"]})["docs"]
    check([d["found"] for d in docs] == [True, False], f"mget: {docs}")
    client.delete(index=index, id="5", refresh=True)
    check(client.count(index=index)["count"] == 200, "count after delete")
    client.indices.delete(index=index)
    check(not client.indices.exists(index=index), "index gone")

    # osproxy's own errors are parsed like OpenSearch's.
    dead = OpenSearch(hosts=[dead_url], max_retries=0, timeout=30)
    try:
        dead.search(index=index)
        check(False, "search through a proxy with a dead upstream did not raise")
    except TransportError as e:
        check(e.status_code == 502, f"status {e.status_code}")
        check(e.error == "upstream_unavailable", f"error type {e.error!r}")
        check(e.info["error"]["osproxy"]["retryable"] is True, f"info {e.info}")
    print("opensearch-py: all checks passed")


if __name__ == "__main__":
    main()
