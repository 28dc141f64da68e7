/**
 * What `serve --backend onnx|auto` needs from this folder: where a model's export is looked for,
 * whether it is usable for the model (and adapter) being served, and the engine decoder over it.
 */

import {
  checkExportMatchesModel,
  type OnnxExportInfo,
  readOnnxExportInfo,
} from "../../core/mod.ts";
import { onnxDecoder } from "./decoder.ts";
import { loadOnnxModel, type OnnxDevice, type OnnxModel } from "./runner.ts";
import type { Decoder } from "../engine/decoder.ts";

/** Where an export is looked for by default: `<adapter>/onnx` with an adapter, else `<model>/onnx`. */
export function defaultOnnxExportDir(modelDir: string, adapterDir?: string | null): string {
  return `${(adapterDir ?? modelDir).replace(/\/+$/, "")}/onnx`;
}

export type OnnxProbe =
  | { usable: true; dir: string; info: OnnxExportInfo }
  | { usable: false; dir: string; reason: string };

/**
 * Whether `exportDir` holds a finished export of this model (and adapter): for `--backend auto`,
 * which takes ONNX Runtime on a software adapter only when this says usable (and prints why not).
 */
export async function probeOnnxExport(
  exportDir: string,
  modelDir: string,
  adapterDir?: string | null,
): Promise<OnnxProbe> {
  try {
    const { info } = await readOnnxExportInfo(exportDir);
    await checkExportMatchesModel(exportDir, info, modelDir, adapterDir);
    return { usable: true, dir: exportDir, info };
  } catch (err) {
    return { usable: false, dir: exportDir, reason: (err as Error).message };
  }
}

export interface OnnxBackendOptions {
  modelDir: string;
  adapterDir?: string | null;
  /** Default: `defaultOnnxExportDir(modelDir, adapterDir)`. */
  exportDir?: string;
  /** Sequences decoding together. */
  slots: number;
  maxContext?: number;
  device?: OnnxDevice;
  threads?: number;
}

/** Loads the export (checked against the model and adapter) and returns the engine's decoder. */
export async function loadOnnxDecoder(
  options: OnnxBackendOptions,
): Promise<{ decoder: Decoder; model: OnnxModel }> {
  const dir = options.exportDir ?? defaultOnnxExportDir(options.modelDir, options.adapterDir);
  const model = await loadOnnxModel(dir, {
    modelDir: options.modelDir,
    adapterDir: options.adapterDir ?? null,
    device: options.device,
    maxContext: options.maxContext,
    threads: options.threads,
  });
  return { decoder: onnxDecoder(model, { slots: options.slots }), model };
}
