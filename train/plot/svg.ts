/** The loss plot as SVG text (a small writer of its own: lines, polylines, circles, text). */

import { layout, type PlotSpec } from "./axes.ts";

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const n = (v: number) => Number(v.toFixed(2)).toString();

export function plotSvg(spec: PlotSpec): string {
  const L = layout(spec);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${L.width}" height="${L.height}" ` +
    `viewBox="0 0 ${L.width} ${L.height}" font-family="sans-serif" font-size="13">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${L.width / 2}" y="26" text-anchor="middle" font-size="16">${esc(spec.title)}</text>`,
  ];
  for (const t of L.yTicks) {
    const y = n(L.py(t.value));
    out.push(`<line x1="${L.left}" y1="${y}" x2="${L.right}" y2="${y}" stroke="#e4e4e4"/>`);
    out.push(
      `<text x="${L.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${
        esc(t.label)
      }</text>`,
    );
  }
  for (const t of L.xTicks) {
    const x = n(L.px(t.value));
    out.push(`<line x1="${x}" y1="${L.top}" x2="${x}" y2="${L.bottom}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${x}" y="${L.bottom + 18}" text-anchor="middle">${esc(t.label)}</text>`);
  }
  out.push(
    `<rect x="${L.left}" y="${L.top}" width="${L.right - L.left}" height="${L.bottom - L.top}" ` +
      `fill="none" stroke="#333333"/>`,
  );
  out.push(
    `<text x="${(L.left + L.right) / 2}" y="${L.height - 12}" text-anchor="middle">${
      esc(spec.xLabel)
    }</text>`,
  );
  out.push(
    `<text x="18" y="${(L.top + L.bottom) / 2}" text-anchor="middle" ` +
      `transform="rotate(-90 18 ${(L.top + L.bottom) / 2})">${esc(spec.yLabel)}</text>`,
  );
  for (const s of spec.series) {
    const pts = s.points.filter((p) => Number.isFinite(p.y));
    if (pts.length > 1) {
      out.push(
        `<polyline class="series" data-name="${
          esc(s.name)
        }" fill="none" stroke="${s.color}" stroke-width="2" ` +
          `points="${pts.map((p) => `${n(L.px(p.x))},${n(L.py(p.y))}`).join(" ")}"/>`,
      );
    }
    if (s.markers || pts.length === 1) {
      for (const p of pts) {
        out.push(`<circle cx="${n(L.px(p.x))}" cy="${n(L.py(p.y))}" r="3.5" fill="${s.color}"/>`);
      }
    }
  }
  // legend, top right inside the plot area
  spec.series.forEach((s, i) => {
    const y = L.top + 16 + i * 20, x = L.right - 110;
    out.push(
      `<line x1="${x}" y1="${y}" x2="${x + 24}" y2="${y}" stroke="${s.color}" stroke-width="3"/>`,
    );
    out.push(`<text x="${x + 32}" y="${y}" dominant-baseline="middle">${esc(s.name)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
