/**
 * A tiny Prometheus text-format writer (exposition format 0.0.4): counters, gauges and
 * histograms with optional labels, enough for the serving metrics without a client library.
 */

export type Labels = Record<string, string>;

export interface Counter {
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
}

export interface Gauge {
  set(value: number, labels?: Labels): void;
  get(labels?: Labels): number;
}

export interface Histogram {
  observe(value: number, labels?: Labels): void;
  /** Observations so far (all label sets together). */
  count(): number;
}

interface Family {
  render(): string;
}

export interface MetricsRegistry {
  counter(name: string, help: string): Counter;
  gauge(name: string, help: string): Gauge;
  /** A gauge whose value is read at scrape time. */
  gaugeFn(name: string, help: string, read: () => number): void;
  histogram(name: string, help: string, buckets: number[]): Histogram;
  /** The whole registry in Prometheus text format. */
  render(): string;
}

/** The content type Prometheus expects for the text format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export function createRegistry(): MetricsRegistry {
  const families = new Map<string, Family>();

  function add(name: string, family: Family) {
    if (!NAME_RE.test(name)) throw new Error(`invalid metric name "${name}"`);
    if (families.has(name)) throw new Error(`metric "${name}" registered twice`);
    families.set(name, family);
  }

  return {
    counter(name, help) {
      const values = new Map<string, number>();
      add(name, {
        render: () => header(name, help, "counter") + series(name, values, 0),
      });
      return {
        inc(labels, by = 1) {
          if (!(by >= 0)) throw new Error(`counter ${name} can only increase (got ${by})`);
          const key = labelKey(labels);
          values.set(key, (values.get(key) ?? 0) + by);
        },
        get: (labels) => values.get(labelKey(labels)) ?? 0,
      };
    },
    gauge(name, help) {
      const values = new Map<string, number>();
      add(name, {
        render: () => header(name, help, "gauge") + series(name, values, 0),
      });
      return {
        set(value, labels) {
          values.set(labelKey(labels), value);
        },
        get: (labels) => values.get(labelKey(labels)) ?? 0,
      };
    },
    gaugeFn(name, help, read) {
      add(name, {
        render: () => header(name, help, "gauge") + `${name} ${formatValue(read())}\n`,
      });
    },
    histogram(name, help, buckets) {
      const bounds = [...buckets].sort((a, b) => a - b);
      if (bounds.some((b) => !Number.isFinite(b))) {
        throw new Error(`histogram ${name}: buckets must be finite numbers`);
      }
      const series = new Map<string, { counts: number[]; sum: number; count: number }>();
      let total = 0;
      add(name, {
        render() {
          let out = header(name, help, "histogram");
          for (const [key, s] of sortedEntries(series)) {
            let cumulative = 0;
            bounds.forEach((le, i) => {
              cumulative += s.counts[i];
              out += `${name}_bucket${withLabel(key, "le", formatValue(le))} ${cumulative}\n`;
            });
            out += `${name}_bucket${withLabel(key, "le", "+Inf")} ${s.count}\n`;
            out += `${name}_sum${braces(key)} ${formatValue(s.sum)}\n`;
            out += `${name}_count${braces(key)} ${s.count}\n`;
          }
          return out;
        },
      });
      return {
        observe(value, labels) {
          const key = labelKey(labels);
          let s = series.get(key);
          if (!s) series.set(key, s = { counts: bounds.map(() => 0), sum: 0, count: 0 });
          const i = bounds.findIndex((le) => value <= le);
          if (i >= 0) s.counts[i]++;
          s.sum += value;
          s.count++;
          total++;
        },
        count: () => total,
      };
    },
    render() {
      return [...families.values()].map((f) => f.render()).join("");
    },
  };
}

function header(name: string, help: string, type: string): string {
  const escaped = help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
  return `# HELP ${name} ${escaped}\n# TYPE ${name} ${type}\n`;
}

/** Series lines of a counter or gauge; an unlabelled family shows its zero before any update. */
function series(name: string, values: Map<string, number>, initial: number): string {
  if (values.size === 0) return `${name} ${formatValue(initial)}\n`;
  return sortedEntries(values).map(([key, v]) => `${name}${braces(key)} ${formatValue(v)}\n`)
    .join("");
}

function sortedEntries<T>(map: Map<string, T>): [string, T][] {
  return [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Labels as a canonical `a="x",b="y"` string (sorted names, escaped values): the series key. */
function labelKey(labels?: Labels): string {
  if (!labels) return "";
  return Object.keys(labels).sort().map((k) => {
    if (!LABEL_RE.test(k)) throw new Error(`invalid label name "${k}"`);
    return `${k}="${escapeLabelValue(labels[k])}"`;
  }).join(",");
}

function escapeLabelValue(v: string): string {
  return String(v).replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

function braces(key: string): string {
  return key ? `{${key}}` : "";
}

function withLabel(key: string, name: string, value: string): string {
  return `{${key ? key + "," : ""}${name}="${value}"}`;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}
