/**
 * A grouped bar chart as SVG text: one group per category (subject), one bar per series (model
 * variant), values in [0, max]. The loss-plot writer in `train/plot/` draws lines and points
 * only, so bars get this small writer; the output is deterministic text (no ids, no dates).
 */

export interface BarSeries {
  name: string;
  /** CSS colour `#rrggbb`. */
  color: string;
  /** One value per group; NaN draws no bar. */
  values: number[];
}

export interface BarChartSpec {
  title: string;
  yLabel: string;
  groups: string[];
  series: BarSeries[];
  /** Top of the y axis (default 100). */
  max?: number;
  /** Value label format (default one decimal). */
  format?: (v: number) => string;
}

/** Colours for series, in order (distinguishable, print-safe). */
export const SERIES_COLORS = [
  "#4e79a7",
  "#f28e2b",
  "#59a14f",
  "#e15759",
  "#76b7b2",
  "#edc948",
];

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
const num = (v: number) => Number(v.toFixed(2)).toString();

export function barChartSvg(spec: BarChartSpec): string {
  const max = spec.max ?? 100;
  const fmt = spec.format ?? ((v: number) => v.toFixed(1));
  const barW = 18, gap = 6, groupPad = 24;
  const groupW = spec.series.length * barW +
    Math.max(0, spec.series.length - 1) * gap;
  // Group labels are rotated by 30°: room below the axis for the longest, and on the left for
  // the first one (which reaches left of its group).
  const textW = (t: string) =>
    [...t].reduce((w, ch) => w + (/[\u1100-\uffff]/.test(ch) ? 12 : 7), 0);
  const widest = Math.max(0, ...spec.groups.map(textW));
  const firstW = spec.groups.length ? textW(spec.groups[0]) : 0;
  const left = Math.max(64, Math.ceil(firstW * 0.87 - groupPad - groupW / 2) + 12);
  const right = 24, top = 56, plotH = 260;
  const labelH = Math.ceil(widest * 0.5) + 28;
  const legendH = 22 * spec.series.length;
  const width = Math.max(360, left + right + spec.groups.length * (groupW + groupPad) + groupPad);
  const height = top + plotH + labelH + legendH + 24;
  const bottom = top + plotH;
  const py = (v: number) => bottom - (Math.min(Math.max(v, 0), max) / max) * plotH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${num(width)}" height="${num(height)}" ` +
    `viewBox="0 0 ${num(width)} ${num(height)}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${num(width / 2)}" y="28" text-anchor="middle" font-size="16">${
      esc(spec.title)
    }</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const v = (max * i) / 5, y = num(py(v));
    out.push(
      `<line x1="${left}" y1="${y}" x2="${num(width - right)}" y2="${y}" stroke="#e4e4e4"/>`,
    );
    out.push(
      `<text x="${left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${
        esc(fmt(v))
      }</text>`,
    );
  }
  out.push(
    `<text x="16" y="${num(top + plotH / 2)}" text-anchor="middle" ` +
      `transform="rotate(-90 16 ${num(top + plotH / 2)})">${esc(spec.yLabel)}</text>`,
  );
  spec.groups.forEach((g, gi) => {
    const x0 = left + groupPad + gi * (groupW + groupPad);
    spec.series.forEach((s, si) => {
      const v = s.values[gi];
      if (!Number.isFinite(v)) return;
      const x = x0 + si * (barW + gap), y = py(v);
      out.push(
        `<rect x="${num(x)}" y="${num(y)}" width="${barW}" height="${num(bottom - y)}" ` +
          `fill="${s.color}"><title>${esc(`${s.name} · ${g}: ${fmt(v)}`)}</title></rect>`,
      );
      out.push(
        `<text x="${num(x + barW / 2)}" y="${num(y - 4)}" text-anchor="middle" font-size="9">${
          esc(fmt(v))
        }</text>`,
      );
    });
    const cx = x0 + groupW / 2;
    out.push(
      `<text x="${num(cx)}" y="${bottom + 16}" text-anchor="end" ` +
        `transform="rotate(-30 ${num(cx)} ${bottom + 16})">${esc(g)}</text>`,
    );
  });
  out.push(
    `<line x1="${left}" y1="${bottom}" x2="${
      num(width - right)
    }" y2="${bottom}" stroke="#333333"/>`,
  );
  spec.series.forEach((s, si) => {
    const y = bottom + labelH + 8 + si * 22;
    out.push(
      `<rect x="${left}" y="${num(y)}" width="14" height="14" fill="${s.color}"/>`,
    );
    out.push(
      `<text x="${left + 20}" y="${num(y + 7)}" dominant-baseline="middle">${esc(s.name)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
