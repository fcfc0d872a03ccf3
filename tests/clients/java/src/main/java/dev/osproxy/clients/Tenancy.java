package dev.osproxy.clients;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.hc.core5.http.Header;
import org.apache.hc.core5.http.HttpHost;
import org.apache.hc.core5.http.message.BasicHeader;
import org.opensearch.client.json.JsonData;
import org.opensearch.client.json.jackson.JacksonJsonpMapper;
import org.opensearch.client.opensearch.OpenSearchClient;
import org.opensearch.client.opensearch._types.FieldValue;
import org.opensearch.client.opensearch._types.OpenSearchException;
import org.opensearch.client.opensearch._types.Refresh;
import org.opensearch.client.opensearch._types.Time;
import org.opensearch.client.opensearch.core.MgetResponse;
import org.opensearch.client.opensearch.core.MsearchResponse;
import org.opensearch.client.opensearch.core.SearchResponse;
import org.opensearch.client.opensearch.core.bulk.BulkOperation;
import org.opensearch.client.opensearch.core.search.Hit;
import org.opensearch.client.transport.httpclient5.ApacheHttpClient5TransportBuilder;

/**
 * The official Java client (opensearch-java), unchanged, against tenancy: two tenants share the
 * logical index {@code orders} and each sees only its own documents.
 *
 * <p>Usage: {@code Tenancy PROXY_URL ACME_TOKEN GLOBEX_TOKEN}; exits non-zero on a mismatch.
 */
public final class Tenancy {

    private static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("opensearch-java check failed: " + what);
            System.exit(1);
        }
    }

    @SuppressWarnings("rawtypes")
    private static final Class<Map> DOC = Map.class;

    static OpenSearchClient client(String url, String token) throws Exception {
        var transport = ApacheHttpClient5TransportBuilder.builder(HttpHost.create(url))
                .setDefaultHeaders(new Header[] {new BasicHeader("Authorization", "Bearer " + token)})
                .setMapper(new JacksonJsonpMapper())
                .setCompressionEnabled(true) // gzip request bodies
                .build();
        return new OpenSearchClient(transport);
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        OpenSearchClient acme = client(url, args[1]);
        OpenSearchClient globex = client(url, args[2]);

        for (OpenSearchClient c : List.of(acme, globex)) {
            if (!c.indices().exists(e -> e.index("orders")).value()) {
                c.indices().create(b -> b.index("orders").mappings(m -> m
                        .properties("item", p -> p.keyword(k -> k))
                        .properties("n", p -> p.integer(i -> i))));
            }
        }
        var indexed = acme.index(i -> i.index("orders").id("1").document(Map.of("item", "anvil", "n", 0))
                .refresh(Refresh.True));
        check(indexed.index().equals("orders") && indexed.id().equals("1"), "index answer " + indexed);
        globex.index(i -> i.index("orders").id("1").document(Map.of("item", "globe", "n", 0)).refresh(Refresh.True));

        List<BulkOperation> ops = new ArrayList<>();
        for (int n = 1; n <= 200; n++) {
            final int k = n;
            ops.add(BulkOperation.of(o -> o.index(x -> x.id("b" + k)
                    .document(Map.of("item", k % 2 == 0 ? "nut" : "bolt", "n", k)))));
        }
        var bulk = acme.bulk(b -> b.index("orders").operations(ops).refresh(Refresh.True));
        check(!bulk.errors() && bulk.items().size() == 200, "bulk errors " + bulk.errors());

        check(acme.count(c -> c.index("orders")).count() == 201, "acme count");
        check(globex.count(c -> c.index("orders")).count() == 1, "globex count");
        check("anvil".equals(acme.get(g -> g.index("orders").id("1"), DOC).source().get("item")), "acme get");
        check("globe".equals(globex.get(g -> g.index("orders").id("1"), DOC).source().get("item")), "globex get");

        SearchResponse<Map> found = acme.search(s -> s.index("orders").size(5)
                .query(q -> q.range(r -> r.field("n").gte(JsonData.of(1))))
                .aggregations("items", a -> a.terms(t -> t.field("item"))), DOC);
        check(found.hits().total().value() == 200, "search total " + found.hits().total().value());
        for (Hit<Map> h : found.hits().hits()) {
            check(h.index().equals("orders") && !h.id().contains(":") && !h.source().containsKey("_tenant"),
                    "hit " + h.id());
        }
        var buckets = found.aggregations().get("items").sterms().buckets().array();
        check(buckets.size() == 2 && buckets.get(0).docCount() == 100, "buckets " + buckets.size());

        var updated = acme.update(u -> u.index("orders").id("1").doc(Map.of("n", 7)).refresh(Refresh.True), DOC);
        check(updated.result().jsonValue().equals("updated"), "update " + updated.result());

        MgetResponse<Map> mget = acme.mget(m -> m.index("orders").ids("1", "b2", "nope"), DOC);
        var docs = mget.docs();
        check(docs.size() == 3 && docs.get(0).result().found() && docs.get(1).result().found()
                && !docs.get(2).result().found(), "mget");

        // The answer osproxy assembles must parse as the typed client expects
        // (the top-level `took` it requires included).
        MsearchResponse<Map> msearch = acme.msearch(m -> m
                .searches(s -> s.header(h -> h.index("orders"))
                        .body(b -> b.query(q -> q.term(t -> t.field("item").value(FieldValue.of("anvil"))))))
                .searches(s -> s.header(h -> h.index("orders")).body(b -> b.size(0))), DOC);
        var responses = msearch.responses();
        check(responses.size() == 2 && responses.get(0).result().hits().total().value() == 1
                && responses.get(1).result().hits().total().value() == 201, "msearch");

        SearchResponse<Map> page = acme.search(s -> s.index("orders").size(50)
                .scroll(Time.of(t -> t.time("1m"))), DOC);
        int seen = page.hits().hits().size();
        String scrollId = page.scrollId();
        while (true) {
            final String id = scrollId;
            var next = acme.scroll(s -> s.scrollId(id).scroll(Time.of(t -> t.time("1m"))), DOC);
            if (next.hits().hits().isEmpty()) {
                break;
            }
            seen += next.hits().hits().size();
            if (next.scrollId() != null) {
                scrollId = next.scrollId();
            }
        }
        check(seen == 201, "scrolled " + seen);
        final String last = scrollId;
        check(acme.clearScroll(c -> c.scrollId(last)).succeeded(), "clear scroll");

        check(acme.delete(d -> d.index("orders").id("b1").refresh(Refresh.True)).result().jsonValue()
                .equals("deleted"), "delete");
        var byQuery = acme.deleteByQuery(d -> d.index("orders")
                .query(q -> q.term(t -> t.field("item").value(FieldValue.of("nut")))).refresh(Refresh.True));
        check(byQuery.deleted() == 100, "delete by query " + byQuery.deleted());
        check(acme.count(c -> c.index("orders")).count() == 100, "acme count after deletes");
        check(globex.count(c -> c.index("orders")).count() == 1, "globex untouched");

        // Refusals arrive as the client's own exceptions.
        check(!globex.get(g -> g.index("orders").id("b2"), DOC).found(), "globex sees acme's doc");
        try {
            acme.search(s -> s.index("orders").aggregations("s", a -> a.scriptedMetric(m -> m
                    .mapScript(sc -> sc.inline(i -> i.source("state.x = 1"))))), DOC);
            check(false, "a scripted metric was not refused");
        } catch (OpenSearchException e) {
            check(e.status() == 400 && e.error().type() != null, "script refusal " + e.status());
        }
        // The client reports a 401 as a transport failure (as it does for
        // OpenSearch's security plugin), naming the status line.
        try {
            client(url, "not-a-valid-token-0123456789").count(c -> c.index("orders"));
            check(false, "a bad token was not refused");
        } catch (java.io.IOException e) {
            boolean says401 = false;
            for (Throwable t = e; t != null; t = t.getCause()) {
                says401 |= String.valueOf(t.getMessage()).contains("401 Unauthorized");
            }
            check(says401, "bad token: " + e);
        }
        System.out.println("opensearch-java: all checks passed");
        System.exit(0);
    }
}
