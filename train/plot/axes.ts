/**
 * The layout shared by the SVG and PNG loss plots: plot area, data ranges, "nice" tick values
 * (1, 2 or 5 × a power of ten) and their labels, so both files show the same picture.
 */

export interface Series {
  name: string;
  /** CSS colour `#rrggbb`. */
  color: string;
  points: { x: number; y: number }[];
  /** Draw a marker at each point (sparse series such as eval loss). */
  markers: boolean;
}

export interface PlotSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  width?: number;
  height?: number;
}

export interface Layout {
  width: number;
  height: number;
  /** Plot area in pixels. */
  left: number;
  right: number;
  top: number;
  bottom: number;
  xMin: number;
  xMax: number;
  yMin: number;
  yMax: number;
  xTicks: { value: number; label: string }[];
  yTicks: { value: number; label: string }[];
  px(x: number): number;
  py(y: number): number;
}

/** Tick values covering [min, max] with about `target` steps. */
export function niceTicks(
  min: number,
  max: number,
  target = 6,
): { values: number[]; step: number } {
  if (!(max > min)) {
    const pad = Math.abs(min) > 0 ? Math.abs(min) * 0.1 : 1;
    min -= pad;
    max += pad;
  }
  const raw = (max - min) / target;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? 10 * pow;
  const values: number[] = [];
  for (let v = Math.floor(min / step) * step; v <= max + step * 1e-9; v += step) {
    values.push(Number(v.toPrecision(12)));
  }
  if (values[0] > min) values.unshift(Number((values[0] - step).toPrecision(12)));
  if (values[values.length - 1] < max) {
    values.push(Number((values[values.length - 1] + step).toPrecision(12)));
  }
  return { values, step };
}

function tickLabel(v: number, step: number): string {
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  if (Math.abs(v) >= 1e5) return v.toExponential(1).replace("e+", "e");
  return v.toFixed(decimals);
}

export function layout(spec: PlotSpec): Layout {
  const width = spec.width ?? 800, height = spec.height ?? 480;
  const all = spec.series.flatMap((s) => s.points).filter((p) =>
    Number.isFinite(p.x) && Number.isFinite(p.y)
  );
  const xs = all.map((p) => p.x), ys = all.map((p) => p.y);
  const xt = niceTicks(xs.length ? Math.min(0, ...xs) : 0, xs.length ? Math.max(...xs) : 1);
  const yt = niceTicks(ys.length ? Math.min(...ys) : 0, ys.length ? Math.max(...ys) : 1, 5);
  const left = 80, right = width - 24, top = 48, bottom = height - 56;
  const xMin = xt.values[0], xMax = xt.values[xt.values.length - 1];
  const yMin = yt.values[0], yMax = yt.values[yt.values.length - 1];
  return {
    width,
    height,
    left,
    right,
    top,
    bottom,
    xMin,
    xMax,
    yMin,
    yMax,
    xTicks: xt.values.map((value) => ({ value, label: tickLabel(value, xt.step) })),
    yTicks: yt.values.map((value) => ({ value, label: tickLabel(value, yt.step) })),
    px: (x) => left + ((x - xMin) / (xMax - xMin)) * (right - left),
    py: (y) => bottom - ((y - yMin) / (yMax - yMin)) * (bottom - top),
  };
}
