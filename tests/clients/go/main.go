// The official Go client (opensearch-go v4), unchanged, against tenancy:
// two tenants share the logical index `orders` and each sees only its own
// documents, through the client's own API and bulk helper, with gzip
// request bodies (CompressRequestBody).
//
// Usage: go run . PROXY_URL ACME_TOKEN GLOBEX_TOKEN
// Run by crates/osproxy/tests/live/clients.rs; exits non-zero on a mismatch.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/opensearch-project/opensearch-go/v4"
	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"
	"github.com/opensearch-project/opensearch-go/v4/opensearchutil"
)

func check(cond bool, format string, args ...any) {
	if !cond {
		fmt.Fprintf(os.Stderr, "opensearch-go check failed: "+format+"\n", args...)
		os.Exit(1)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		fmt.Fprintf(os.Stderr, "opensearch-go call failed: %v\n", err)
		os.Exit(1)
	}
	return v
}

func client(url, token string) *opensearchapi.Client {
	header := http.Header{}
	header.Set("Authorization", "Bearer "+token)
	c, err := opensearchapi.NewClient(opensearchapi.Config{
		Client: opensearch.Config{Addresses: []string{url}, Header: header, DisableRetry: true, CompressRequestBody: true},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		os.Exit(1)
	}
	return c
}

func main() {
	url, acmeToken, globexToken := os.Args[1], os.Args[2], os.Args[3]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	acme, globex := client(url, acmeToken), client(url, globexToken)

	for _, c := range []*opensearchapi.Client{acme, globex} {
		resp, err := c.Indices.Exists(ctx, opensearchapi.IndicesExistsReq{Indices: []string{"orders"}})
		if err != nil && (resp == nil || resp.StatusCode != 404) {
			must(resp, err)
		}
		if resp.StatusCode == 404 {
			must(c.Indices.Create(ctx, opensearchapi.IndicesCreateReq{
				Index: "orders",
				Body:  strings.NewReader(`{"mappings":{"properties":{"item":{"type":"keyword"},"n":{"type":"integer"}}}}`),
			}))
		}
	}

	idx := must(acme.Index(ctx, opensearchapi.IndexReq{
		Index: "orders", DocumentID: "1", Body: strings.NewReader(`{"item":"anvil","n":0}`),
		Params: opensearchapi.IndexParams{Refresh: "true"},
	}))
	check(idx.Index == "orders" && idx.ID == "1", "index answer %+v", idx)
	must(globex.Index(ctx, opensearchapi.IndexReq{
		Index: "orders", DocumentID: "1", Body: strings.NewReader(`{"item":"globe","n":0}`),
		Params: opensearchapi.IndexParams{Refresh: "true"},
	}))

	// The bulk helper: 200 documents for acme.
	bi := must(opensearchutil.NewBulkIndexer(opensearchutil.BulkIndexerConfig{
		Client: acme, Index: "orders", Refresh: "true", FlushBytes: 4096,
	}))
	for i := 1; i <= 200; i++ {
		item := "bolt"
		if i%2 == 0 {
			item = "nut"
		}
		err := bi.Add(ctx, opensearchutil.BulkIndexerItem{
			Action:     "index",
			DocumentID: fmt.Sprintf("b%d", i),
			Body:       strings.NewReader(fmt.Sprintf(`{"item":%q,"n":%d}`, item, i)),
		})
		check(err == nil, "bulk add: %v", err)
	}
	check(bi.Close(ctx) == nil, "bulk close")
	stats := bi.Stats()
	check(stats.NumFlushed == 200 && stats.NumFailed == 0, "bulk stats %+v", stats)
	must(acme.Indices.Refresh(ctx, &opensearchapi.IndicesRefreshReq{Index: []string{"orders"}}))

	count := must(acme.Indices.Count(ctx, &opensearchapi.IndicesCountReq{Indices: []string{"orders"}}))
	check(count.Count == 201, "acme count %d", count.Count)
	count = must(globex.Indices.Count(ctx, &opensearchapi.IndicesCountReq{Indices: []string{"orders"}}))
	check(count.Count == 1, "globex count %d", count.Count)

	got := must(acme.Document.Get(ctx, opensearchapi.DocumentGetReq{Index: "orders", DocumentID: "1"}))
	check(got.Found && string(got.Source) == `{"item":"anvil","n":0}`, "acme get %s", got.Source)
	got = must(globex.Document.Get(ctx, opensearchapi.DocumentGetReq{Index: "orders", DocumentID: "1"}))
	check(string(got.Source) == `{"item":"globe","n":0}`, "globex get %s", got.Source)

	// A search with an aggregation.
	found := must(acme.Search(ctx, &opensearchapi.SearchReq{
		Indices: []string{"orders"},
		Body:    strings.NewReader(`{"size":5,"query":{"range":{"n":{"gte":1}}},"aggs":{"items":{"terms":{"field":"item"}}}}`),
	}))
	check(found.Hits.Total.Value == 200, "search total %d", found.Hits.Total.Value)
	for _, h := range found.Hits.Hits {
		check(h.Index == "orders" && !strings.Contains(h.ID, ":") && !strings.Contains(string(h.Source), "_tenant"), "hit %+v", h)
	}
	var aggs struct {
		Items struct {
			Buckets []struct {
				Key   string `json:"key"`
				Count int    `json:"doc_count"`
			} `json:"buckets"`
		} `json:"items"`
	}
	check(json.Unmarshal(found.Aggregations, &aggs) == nil, "aggregations %s", found.Aggregations)
	check(len(aggs.Items.Buckets) == 2 && aggs.Items.Buckets[0].Count == 100, "buckets %+v", aggs.Items.Buckets)

	upd := must(acme.Update(ctx, opensearchapi.UpdateReq{
		Index: "orders", DocumentID: "1", Body: strings.NewReader(`{"doc":{"n":7}}`),
		Params: opensearchapi.UpdateParams{Refresh: "true"},
	}))
	check(upd.Result == "updated", "update %+v", upd)

	mget := must(acme.MGet(ctx, opensearchapi.MGetReq{
		Index: "orders", Body: strings.NewReader(`{"ids":["1","b2","nope"]}`),
	}))
	check(len(mget.Docs) == 3 && mget.Docs[0].Found && mget.Docs[1].Found && !mget.Docs[2].Found, "mget %+v", mget.Docs)

	msearch := must(acme.MSearch(ctx, opensearchapi.MSearchReq{
		Body: strings.NewReader("{\"index\":\"orders\"}\n{\"query\":{\"term\":{\"item\":\"anvil\"}}}\n{\"index\":\"orders\"}\n{\"size\":0}\n"),
	}))
	check(len(msearch.Responses) == 2 && msearch.Responses[0].Hits.Total.Value == 1 &&
		msearch.Responses[1].Hits.Total.Value == 201, "msearch %+v", msearch.Responses)

	// Scroll through acme's documents, then clear the scroll: the client
	// sends its id in the path (DELETE /_search/scroll/<id>).
	page := must(acme.Search(ctx, &opensearchapi.SearchReq{
		Indices: []string{"orders"},
		Body:    strings.NewReader(`{"size":50,"query":{"match_all":{}}}`),
		Params:  opensearchapi.SearchParams{Scroll: time.Minute},
	}))
	seen := len(page.Hits.Hits)
	check(page.ScrollID != nil, "no scroll id")
	scrollID := *page.ScrollID
	for {
		next := must(acme.Scroll.Get(ctx, opensearchapi.ScrollGetReq{
			ScrollID: scrollID, Params: opensearchapi.ScrollGetParams{Scroll: time.Minute},
		}))
		if len(next.Hits.Hits) == 0 {
			break
		}
		seen += len(next.Hits.Hits)
		if next.ScrollID != nil {
			scrollID = *next.ScrollID
		}
	}
	check(seen == 201, "scrolled %d", seen)
	cleared := must(acme.Scroll.Delete(ctx, opensearchapi.ScrollDeleteReq{ScrollIDs: []string{scrollID}}))
	check(cleared.Succeeded, "clear scroll %+v", cleared)

	del := must(acme.Document.Delete(ctx, opensearchapi.DocumentDeleteReq{
		Index: "orders", DocumentID: "b1", Params: opensearchapi.DocumentDeleteParams{Refresh: "true"},
	}))
	check(del.Result == "deleted", "delete %+v", del)
	dbq := must(acme.Document.DeleteByQuery(ctx, opensearchapi.DocumentDeleteByQueryReq{
		Indices: []string{"orders"}, Body: strings.NewReader(`{"query":{"term":{"item":"nut"}}}`),
		Params: opensearchapi.DocumentDeleteByQueryParams{Refresh: opensearchapi.ToPointer(true)},
	}))
	check(dbq.Deleted == 100, "delete by query %+v", dbq)
	count = must(acme.Indices.Count(ctx, &opensearchapi.IndicesCountReq{Indices: []string{"orders"}}))
	check(count.Count == 100, "acme count after deletes %d", count.Count)
	count = must(globex.Indices.Count(ctx, &opensearchapi.IndicesCountReq{Indices: []string{"orders"}}))
	check(count.Count == 1, "globex untouched %d", count.Count)

	// Refusals arrive as the client's own structured errors.
	// (A missing document is a 404 whose body is the get answer itself,
	// as from OpenSearch: the client reports it as a StringError.)
	_, err := globex.Document.Get(ctx, opensearchapi.DocumentGetReq{Index: "orders", DocumentID: "b2"})
	var notFound *opensearch.StringError
	check(errors.As(err, &notFound) && notFound.Status == 404 && strings.Contains(notFound.Err, `"found":false`),
		"globex get of acme's doc: %v", err)
	var structErr *opensearch.StructError
	_, err = acme.Search(ctx, &opensearchapi.SearchReq{
		Indices: []string{"orders"},
		Body:    strings.NewReader(`{"query":{"match_all":{}},"aggs":{"s":{"scripted_metric":{"map_script":"state.x = 1"}}}}`),
	})
	check(errors.As(err, &structErr) && structErr.Status == 400 && structErr.Err.Type != "", "script refusal: %v", err)
	bad := client(url, "not-a-valid-token-0123456789")
	_, err = bad.Indices.Count(ctx, &opensearchapi.IndicesCountReq{Indices: []string{"orders"}})
	check(errors.As(err, &structErr) && structErr.Status == 401, "bad token: %v", err)
	fmt.Println("opensearch-go: all checks passed")
}
