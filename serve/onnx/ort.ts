/**
 * Loading onnxruntime-node on demand: importing it needs `--allow-ffi` and the package in Deno's
 * npm cache, so only the ONNX backend pays for it and everything else imports this folder freely.
 */

import type * as Ort from "npm:onnxruntime-node@1.30.0";

export type OrtModule = typeof Ort;
export type OrtTensor = Ort.Tensor;
export type OrtSession = Ort.InferenceSession;

let cached: Promise<OrtModule> | null = null;

/** The onnxruntime-node module, or a clear error saying what is missing. */
export function loadOrt(): Promise<OrtModule> {
  cached ??= import("npm:onnxruntime-node@1.30.0").then(
    (m) => (m.default ?? m) as OrtModule,
    (err) => {
      cached = null;
      throw new Error(
        "the ONNX backend needs npm:onnxruntime-node@1.30.0 (install with " +
          "ONNXRUNTIME_NODE_INSTALL=skip so its script does not try to download CUDA binaries) " +
          `and Deno's --allow-ffi permission: ${(err as Error).message.split("\n")[0]}`,
      );
    },
  );
  return cached;
}

/** Execution providers this onnxruntime-node build can use ("cpu" always; "cuda" when bundled). */
export async function availableProviders(): Promise<string[]> {
  const ort = await loadOrt();
  // deno-lint-ignore no-explicit-any
  const list = (ort as any).listSupportedBackends?.() as
    | { name: string; bundled: boolean }[]
    | undefined;
  return (list ?? [{ name: "cpu", bundled: true }]).filter((b) => b.bundled).map((b) => b.name);
}
