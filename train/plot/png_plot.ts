/** The loss plot rasterized: the same layout as the SVG, drawn with the tiny rasterizer. */

import { layout, type PlotSpec } from "./axes.ts";
import { textWidth } from "./font.ts";
import {
  type Canvas,
  createCanvas,
  drawDot,
  drawLine,
  drawText,
  drawTextVertical,
  fillRect,
  parseColor,
} from "./raster.ts";

const GRID: [number, number, number] = [228, 228, 228];
const INK: [number, number, number] = [40, 40, 40];

export function plotCanvas(spec: PlotSpec): Canvas {
  const L = layout(spec);
  const c = createCanvas(L.width, L.height);
  drawText(c, spec.title, L.width / 2, 24, INK, 2, "middle");
  for (const t of L.yTicks) {
    const y = Math.round(L.py(t.value)) + 0.5;
    drawLine(c, L.left, y, L.right, y, GRID, 1);
    drawText(c, t.label, L.left - 8, y, INK, 2, "end");
  }
  for (const t of L.xTicks) {
    const x = Math.round(L.px(t.value)) + 0.5;
    drawLine(c, x, L.top, x, L.bottom, GRID, 1);
    drawText(c, t.label, x, L.bottom + 16, INK, 2, "middle");
  }
  // frame
  drawLine(c, L.left, L.top, L.right, L.top, INK, 1);
  drawLine(c, L.left, L.bottom, L.right, L.bottom, INK, 1);
  drawLine(c, L.left, L.top, L.left, L.bottom, INK, 1);
  drawLine(c, L.right, L.top, L.right, L.bottom, INK, 1);
  drawText(c, spec.xLabel, (L.left + L.right) / 2, L.height - 14, INK, 2, "middle");
  drawTextVertical(c, spec.yLabel, 16, (L.top + L.bottom) / 2, INK, 2);
  for (const s of spec.series) {
    const color = parseColor(s.color);
    const pts = s.points.filter((p) => Number.isFinite(p.y)).map((p) => [L.px(p.x), L.py(p.y)]);
    for (let i = 1; i < pts.length; i++) {
      drawLine(c, pts[i - 1][0], pts[i - 1][1], pts[i][0], pts[i][1], color, 2);
    }
    if (s.markers || pts.length === 1) { for (const [x, y] of pts) drawDot(c, x, y, 3.5, color); }
  }
  // legend box, top right inside the plot area
  const legendW = 40 + Math.max(...spec.series.map((s) => textWidth(s.name, 2)), 0);
  const lx = L.right - legendW - 12, ly = L.top + 8;
  fillRect(c, lx - 6, ly - 4, legendW + 12, spec.series.length * 20 + 8, [255, 255, 255]);
  spec.series.forEach((s, i) => {
    const y = ly + 10 + i * 20;
    drawLine(c, lx, y, lx + 24, y, parseColor(s.color), 3);
    drawText(c, s.name, lx + 32, y, INK, 2, "start");
  });
  return c;
}
