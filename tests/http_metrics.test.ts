// The Prometheus text writer: counters, gauges, histograms, labels and escaping.
import assert from "node:assert/strict";
import { createRegistry } from "../serve/http/metrics.ts";

Deno.test("counters and gauges render HELP, TYPE and sorted labelled series", () => {
  const r = createRegistry();
  const c = r.counter("jobs_total", "Jobs done.");
  const g = r.gauge("temperature_celsius", "Current temperature.");
  let reads = 0;
  r.gaugeFn("reads", "Read at scrape time.", () => ++reads);
  assert.equal(
    r.render(),
    "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total 0\n" +
      "# HELP temperature_celsius Current temperature.\n# TYPE temperature_celsius gauge\n" +
      "temperature_celsius 0\n# HELP reads Read at scrape time.\n# TYPE reads gauge\nreads 1\n",
  );
  c.inc({ route: "/b", status: "200" });
  c.inc({ status: "200", route: "/a" }, 2);
  c.inc({ route: "/b", status: "200" });
  g.set(-3.5);
  const text = r.render();
  assert.match(
    text,
    /jobs_total\{route="\/a",status="200"\} 2\njobs_total\{route="\/b",status="200"\} 2\n/,
  );
  assert.match(text, /^temperature_celsius -3.5$/m);
  assert.match(text, /^reads 2$/m);
  assert.equal(c.get({ route: "/a", status: "200" }), 2);
  assert.throws(() => c.inc(undefined, -1), /can only increase/);
});

Deno.test("label values and help text are escaped", () => {
  const r = createRegistry();
  const c = r.counter("x_total", 'Help with \\ and\nnewline "quoted".');
  c.inc({ path: 'a"b\\c\nd' });
  const text = r.render();
  assert.match(text, /^# HELP x_total Help with \\\\ and\\nnewline "quoted".$/m);
  assert.ok(text.includes('x_total{path="a\\"b\\\\c\\nd"} 1\n'), text);
  assert.throws(() => c.inc({ "bad-label": "x" }), /invalid label name/);
});

Deno.test("histograms render cumulative buckets, +Inf, sum and count", () => {
  const r = createRegistry();
  const h = r.histogram("latency_seconds", "Latency.", [1, 0.1, 0.5]);
  for (const v of [0.05, 0.1, 0.3, 0.7, 2, 0.2]) h.observe(v);
  h.observe(0.01, { route: "/x" });
  assert.equal(h.count(), 7);
  const text = r.render();
  assert.ok(
    text.includes(
      "# TYPE latency_seconds histogram\n" +
        'latency_seconds_bucket{le="0.1"} 2\nlatency_seconds_bucket{le="0.5"} 4\n' +
        'latency_seconds_bucket{le="1"} 5\nlatency_seconds_bucket{le="+Inf"} 6\n' +
        "latency_seconds_sum 3.35\nlatency_seconds_count 6\n" +
        'latency_seconds_bucket{route="/x",le="0.1"} 1\n',
    ),
    text,
  );
  assert.match(text, /^latency_seconds_count\{route="\/x"\} 1$/m);
});

Deno.test("names are checked and registered once", () => {
  const r = createRegistry();
  r.counter("a_total", "A.");
  assert.throws(() => r.counter("a_total", "Again."), /registered twice/);
  assert.throws(() => r.gauge("bad-name", "Bad."), /invalid metric name/);
  assert.throws(() => r.histogram("h", "H.", [1, Infinity]), /finite/);
});
