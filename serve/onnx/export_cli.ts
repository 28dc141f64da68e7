/**
 * `deno task export-onnx --model DIR [--adapter DIR] --out DIR [--dtype f32|f16]`: exports a
 * ChatGLM-6B or Llama-family (Qwen2 / Qwen2.5, Qwen3, Llama 3) model directory (optionally with a
 * PEFT adapter merged in) to an ONNX directory that `serve --backend onnx` runs.
 */

import { parseArgs } from "node:util";
import {
  describeQuant,
  exportModelToOnnx,
  ONNX_DATA_FILE,
  ONNX_MODEL_FILE,
  parseQuantizeFlag,
} from "../../core/mod.ts";

export const EXPORT_HELP = `deno task export-onnx --model DIR --out DIR [options]

Exports a ChatGLM-6B (v1) or Llama-family (Qwen2 / Qwen2.5, Qwen3, Llama 3; config.json's
model_type) model directory to ONNX (opset 17, KV cache as inputs/outputs) for the ONNX Runtime
backend. Writes ${ONNX_MODEL_FILE} (+ ${ONNX_DATA_FILE} for large models) and
onnx_export.json into --out.

  --model DIR            HF model directory (config.json + weights)            (required)
  --out DIR              output directory                                       (required)
  --adapter DIR          PEFT LoRA adapter to merge into the weights (W + scaling·B·A)
  --dtype f32|f16        stored weight dtype; compute is f32 either way         (default f32)
  --quantize SPEC        int8/int4 linears as com.microsoft MatMulNBits: 8 | 4[,group=G]
                         [,embeddings] (both architectures: ChatGLM's four linears, the Llama
                         family's seven projections; a pre-quantized checkpoint needs no flag)
  --quant-accuracy MODE  int8 | f32: MatMulNBits rounds activations to int8 per block (default:
                         ORT's fast CPU path, 2.5-7x its f32 MatMul for int4; int8 weights have
                         no fast f32 kernel; demo perplexity +<0.1%) or multiplies in f32
                         (exact: matches WebGPU to 1e-4, ~2x slower)
  --external-data MODE   auto|always|never: weights in ${ONNX_DATA_FILE}        (default auto:
                         when they exceed 1.5 GiB; ONNX files cannot exceed 2 GiB)
  --max-positions N      longest sequence the runner accepts (default: the config's
                         max_sequence_length, or max_position_embeddings for the Llama family)
  --help                 this text`;

export async function exportOnnxMain(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: "string" },
        out: { type: "string" },
        adapter: { type: "string" },
        dtype: { type: "string", default: "f32" },
        "external-data": { type: "string", default: "auto" },
        "max-positions": { type: "string" },
        quantize: { type: "string" },
        "quant-accuracy": { type: "string", default: "int8" },
        help: { type: "boolean", default: false },
      },
    }));
  } catch (err) {
    console.error(`export-onnx: ${(err as Error).message}\n\n${EXPORT_HELP}`);
    return 2;
  }
  if (values.help) {
    console.log(EXPORT_HELP);
    return 0;
  }
  const usage = (msg: string) => {
    console.error(`export-onnx: ${msg} (see --help)`);
    return 2;
  };
  if (!values.model) return usage("--model DIR is required");
  if (!values.out) return usage("--out DIR is required");
  if (values.dtype !== "f32" && values.dtype !== "f16") {
    return usage(`--dtype must be f32 or f16 (got ${JSON.stringify(values.dtype)})`);
  }
  const ext = values["external-data"];
  if (ext !== "auto" && ext !== "always" && ext !== "never") {
    return usage(`--external-data must be auto, always or never (got ${JSON.stringify(ext)})`);
  }
  let quantize;
  try {
    quantize = parseQuantizeFlag(values.quantize);
  } catch (err) {
    return usage((err as Error).message);
  }
  const accuracy = values["quant-accuracy"];
  if (accuracy !== "int8" && accuracy !== "f32") {
    return usage(`--quant-accuracy must be int8 or f32 (got ${JSON.stringify(accuracy)})`);
  }
  let maxPositions: number | undefined;
  if (values["max-positions"] !== undefined) {
    maxPositions = Number(values["max-positions"]);
    if (!Number.isInteger(maxPositions) || maxPositions < 1) {
      return usage(`--max-positions must be a positive integer (got ${values["max-positions"]})`);
    }
  }
  try {
    const started = performance.now();
    const info = await exportModelToOnnx(values.model, values.out, {
      adapter: values.adapter ?? null,
      dtype: values.dtype,
      externalData: ext === "auto" ? "auto" : ext === "always",
      maxPositions,
      quantize,
      quantAccuracy: accuracy,
      progress: true,
    });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.error(
      `export-onnx: wrote ${values.out}/${ONNX_MODEL_FILE}${
        info.externalData ? ` + ${info.externalData}` : ""
      } (${info.quantization ? describeQuant(info.quantization) : `${info.dtype} weights`}${
        info.source.adapter ? `, adapter ${info.source.adapter.dir} merged` : ""
      }) in ${seconds} s`,
    );
    return 0;
  } catch (err) {
    console.error(`export-onnx: ${(err as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await exportOnnxMain(Deno.args));
