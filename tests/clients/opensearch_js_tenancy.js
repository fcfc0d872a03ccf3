// The official JavaScript client (@opensearch-project/opensearch), unchanged,
// against tenancy: two tenants share the logical index `orders`.
// Usage: node opensearch_js_tenancy.js PROXY_URL ACME_TOKEN GLOBEX_TOKEN [compress]
// With `compress`, the client runs with compression: 'gzip' (gzip request bodies).
// Run by crates/osproxy/tests/live/clients.rs; exits non-zero on a mismatch.
const path = require('path');
const { Client } = require(path.join(process.env.OSPROXY_NODE_MODULES, '@opensearch-project/opensearch'));

const [url, acmeToken, globexToken, mode] = process.argv.slice(2);
const compression = mode === 'compress' ? { compression: 'gzip' } : {};
const mk = (t) => new Client({ node: url, headers: { authorization: `Bearer ${t}` }, ...compression });
const check = (cond, what) => { if (!cond) { console.error(`opensearch-js check failed: ${what}`); process.exit(1); } };

(async () => {
  const acme = mk(acmeToken), globex = mk(globexToken);
  for (const c of [acme, globex]) {
    if (!(await c.indices.exists({ index: 'orders' })).body) {
      await c.indices.create({ index: 'orders', body: { mappings: { properties: { title: { type: 'keyword' } } } } });
    }
  }
  await acme.index({ index: 'orders', id: '1', body: { title: 'anvil' }, refresh: true });
  await globex.index({ index: 'orders', id: '1', body: { title: 'globe' }, refresh: true });
  check((await acme.get({ index: 'orders', id: '1' })).body._source.title === 'anvil', 'acme get');
  const bulk = await acme.helpers.bulk({
    datasource: Array.from({ length: 20 }, (_, i) => ({ title: `bolt ${i}` })),
    onDocument: () => ({ index: { _index: 'orders' } }),
    refresh: true,
  });
  check(bulk.successful === 20 && bulk.failed === 0, `bulk ${JSON.stringify(bulk)}`);
  check((await acme.count({ index: 'orders' })).body.count === 21, 'acme count');
  check((await globex.count({ index: 'orders' })).body.count === 1, 'globex count');
  const titles = [];
  for await (const doc of acme.helpers.scrollDocuments({ index: 'orders', body: { query: { match_all: {} } }, size: 5 })) titles.push(doc.title);
  check(titles.length === 21 && !titles.includes('globe'), `scroll saw ${titles.length}`);
  const ms = await globex.helpers.msearch().search({ index: 'orders' }, { query: { match_all: {} } });
  check(ms.body.hits.total.value === 1, 'msearch helper');
  await acme.delete({ index: 'orders', id: '1', refresh: true });
  check((await globex.get({ index: 'orders', id: '1' })).body._source.title === 'globe', "globex's doc survives");
  try {
    await globex.search({ index: 'orders', body: { aggs: { g: { global: {} } } } });
    check(false, 'global aggregation not refused');
  } catch (e) {
    check(e.meta && e.meta.statusCode === 400 && e.meta.body.error.type === 'construct_refused', `refusal ${e}`);
  }
  console.log('opensearch-js tenancy: all checks passed');
  process.exit(0);
})().catch((e) => { console.error('opensearch-js failed:', e.meta ? JSON.stringify(e.meta.body) : e); process.exit(1); });
