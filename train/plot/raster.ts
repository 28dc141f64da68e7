/**
 * A tiny RGB rasterizer for the PNG plot: filled rectangles, anti-aliased thick lines (distance to
 * the segment), dots, and text in the 5×7 bitmap font.
 */

import { glyph, GLYPH_H, textWidth } from "./font.ts";

export interface Canvas {
  width: number;
  height: number;
  /** RGB, 3 bytes per pixel, row-major. */
  data: Uint8Array;
}

export type Rgb = [number, number, number];

export function createCanvas(width: number, height: number, bg: Rgb = [255, 255, 255]): Canvas {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data.set(bg, i * 3);
  return { width, height, data };
}

export function parseColor(hex: string): Rgb {
  const m = /^#([0-9a-f]{6})$/i.exec(hex);
  if (!m) throw new Error(`colour ${JSON.stringify(hex)} is not #rrggbb`);
  const v = parseInt(m[1], 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function blend(c: Canvas, x: number, y: number, color: Rgb, alpha: number): void {
  if (x < 0 || y < 0 || x >= c.width || y >= c.height || alpha <= 0) return;
  const i = (y * c.width + x) * 3;
  const a = Math.min(1, alpha);
  for (let k = 0; k < 3; k++) c.data[i + k] = Math.round(c.data[i + k] * (1 - a) + color[k] * a);
}

export function fillRect(c: Canvas, x: number, y: number, w: number, h: number, color: Rgb): void {
  for (let j = Math.max(0, Math.floor(y)); j < Math.min(c.height, Math.floor(y + h)); j++) {
    for (let i = Math.max(0, Math.floor(x)); i < Math.min(c.width, Math.floor(x + w)); i++) {
      blend(c, i, j, color, 1);
    }
  }
}

/** A line of `width` pixels, anti-aliased by the pixel centre's distance to the segment. */
export function drawLine(
  c: Canvas,
  x0: number,
  y0: number,
  x1: number,
  y1: number,
  color: Rgb,
  width = 1,
): void {
  const half = width / 2;
  const minX = Math.floor(Math.min(x0, x1) - half - 1),
    maxX = Math.ceil(Math.max(x0, x1) + half + 1);
  const minY = Math.floor(Math.min(y0, y1) - half - 1),
    maxY = Math.ceil(Math.max(y0, y1) + half + 1);
  const dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
  for (let y = Math.max(0, minY); y <= Math.min(c.height - 1, maxY); y++) {
    for (let x = Math.max(0, minX); x <= Math.min(c.width - 1, maxX); x++) {
      const px = x + 0.5, py = y + 0.5;
      const t = len2 > 0 ? Math.max(0, Math.min(1, ((px - x0) * dx + (py - y0) * dy) / len2)) : 0;
      const ex = px - (x0 + t * dx), ey = py - (y0 + t * dy);
      const d = Math.sqrt(ex * ex + ey * ey);
      blend(c, x, y, color, half + 0.5 - d);
    }
  }
}

export function drawDot(c: Canvas, cx: number, cy: number, r: number, color: Rgb): void {
  for (let y = Math.floor(cy - r - 1); y <= Math.ceil(cy + r + 1); y++) {
    for (let x = Math.floor(cx - r - 1); x <= Math.ceil(cx + r + 1); x++) {
      const d = Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
      blend(c, x, y, color, r + 0.5 - d);
    }
  }
}

export type Anchor = "start" | "middle" | "end";

/** Text with its vertical centre at `y`; `anchor` places `x` at its start, middle or end. */
export function drawText(
  c: Canvas,
  text: string,
  x: number,
  y: number,
  color: Rgb,
  scale = 2,
  anchor: Anchor = "start",
): void {
  const w = textWidth(text, scale);
  let cx = Math.round(anchor === "start" ? x : anchor === "middle" ? x - w / 2 : x - w);
  const top = Math.round(y - (GLYPH_H * scale) / 2);
  for (const ch of text) {
    glyph(ch).forEach((row, j) =>
      row.forEach((on, i) => {
        if (on) fillRect(c, cx + i * scale, top + j * scale, scale, scale, color);
      })
    );
    cx += 6 * scale;
  }
}

/** Text rotated a quarter turn counter-clockwise (for the y-axis label), centred on (x, y). */
export function drawTextVertical(
  c: Canvas,
  text: string,
  x: number,
  y: number,
  color: Rgb,
  scale = 2,
): void {
  const w = textWidth(text, scale);
  let cy = Math.round(y + w / 2);
  const left = Math.round(x - (GLYPH_H * scale) / 2);
  for (const ch of text) {
    glyph(ch).forEach((row, j) =>
      row.forEach((on, i) => {
        // glyph pixel (i, j) → column left + j, row cy − i
        if (on) fillRect(c, left + j * scale, cy - (i + 1) * scale, scale, scale, color);
      })
    );
    cy -= 6 * scale;
  }
}
