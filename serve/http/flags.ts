/** The `deno task serve` flags, parsed with `node:util` parseArgs and checked with clear errors. */
import { parseQuantizeFlag, type QuantizeOption, type WeightDtype } from "../../core/mod.ts";
import { dtypeFlag } from "../infer_flags.ts";
import { parseArgs } from "node:util";
import { DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_QUEUE } from "./app.ts";
import { DEFAULT_BODY_TIMEOUT_MS, DEFAULT_MAX_BODY_BYTES } from "./json_body.ts";
import {
  parsePromptFlags,
  PROMPT_FLAG_OPTIONS,
  type PromptFlags,
  promptFlagsUsage,
} from "../prompt_flags.ts";
import { FlagError, intFlag, numberFlag } from "../../base/mod.ts";

export interface ServeFlags extends PromptFlags {
  /** Model directory (HF layout); absent means the embedded demo model. */
  model?: string;
  /** PEFT adapter directory. */
  adapter?: string;
  backend: "webgpu" | "onnx" | "auto";
  /** int8/int4 weights at load (`--quantize`). */
  quantize?: QuantizeOption;
  /** Float weights' storage on the GPU (`--dtype`); absent: the load's default, as infer. */
  dtype?: WeightDtype;
  host: string;
  port: number;
  apiKey?: string;
  maxConcurrent: number;
  maxQueue: number;
  maxBodyBytes: number;
  /** Milliseconds a request body may take to arrive. */
  bodyTimeoutMs: number;
  /** Print the memory plan (f16 / int8 / int4, KV cache for --max-concurrent rows) and exit. */
  dryRun?: boolean;
  help: boolean;
}

export const SERVE_USAGE = `Usage: deno task serve [options]

  --model DIR            model directory (config.json + weights); default: the demo model
  --adapter DIR          PEFT adapter directory (adapter_config.json + weights)
  --backend NAME         webgpu | onnx | auto (default auto)
  --quantize SPEC        int8/int4 weights at load: 8 | 4[,group=G][,embeddings]
  --dtype f16|f32        weight storage on the GPU (default: f16 with shader-f16; on a
                         software adapter f32 when it fits half of memory: gpu-info)
  --dry-run              print the memory plan for f16, int8 and int4 weights (KV cache for
                         --max-concurrent rows) from config.json alone, and exit
  --host HOST            interface to listen on (default 127.0.0.1)
  --port N               port, 0 for any free one (default 8000)
  --api-key KEY          require "Authorization: Bearer KEY" on /v1 routes
  --max-concurrent N     sequences decoding together (default ${DEFAULT_MAX_CONCURRENT})
  --max-queue N          requests waiting beyond those; more get 429 (default ${DEFAULT_MAX_QUEUE})
  --max-body-bytes N     largest request body (default ${DEFAULT_MAX_BODY_BYTES})
  --body-timeout S       seconds a request body may take to arrive; slower ones get 408
                         (default ${DEFAULT_BODY_TIMEOUT_MS / 1000})
${promptFlagsUsage(25)}
  -h, --help             show this help
`;

export { FlagError };

const BACKENDS = ["webgpu", "onnx", "auto"] as const;

export function parseServeFlags(args: string[]): ServeFlags {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: "string" },
        adapter: { type: "string" },
        backend: { type: "string" },
        quantize: { type: "string" },
        dtype: { type: "string" },
        "dry-run": { type: "boolean" },
        host: { type: "string" },
        port: { type: "string" },
        "api-key": { type: "string" },
        "max-concurrent": { type: "string" },
        "max-queue": { type: "string" },
        "max-body-bytes": { type: "string" },
        "body-timeout": { type: "string" },
        ...PROMPT_FLAG_OPTIONS,
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    throw new FlagError(`${(e as Error).message}\n\n${SERVE_USAGE}`);
  }
  const backend = values.backend ?? "auto";
  if (!(BACKENDS as readonly string[]).includes(backend)) {
    throw new FlagError(`--backend: expected webgpu, onnx or auto (got "${backend}")`);
  }
  const prompt = parsePromptFlags(values);
  const host = values.host ?? "127.0.0.1";
  if (host.trim() === "" || /\s/.test(host)) {
    throw new FlagError(`--host: expected a host name or address (got "${host}")`);
  }
  const apiKey = values["api-key"];
  if (apiKey !== undefined && apiKey.trim() === "") {
    throw new FlagError("--api-key: must not be empty (leave the flag out to turn keys off)");
  }
  for (const name of ["model", "adapter"] as const) {
    if (values[name] !== undefined && values[name]!.trim() === "") {
      throw new FlagError(`--${name}: expected a directory (got an empty value)`);
    }
  }
  return {
    model: values.model,
    adapter: values.adapter,
    backend: backend as ServeFlags["backend"],
    ...(values.quantize === undefined ? {} : { quantize: parseQuantizeFlag(values.quantize) }),
    ...prompt,
    ...(values.dtype === undefined ? {} : { dtype: dtypeFlag(values.dtype) }),
    ...(values["dry-run"] ? { dryRun: true } : {}),
    host,
    port: intFlag("port", values.port, 0, 65535) ?? 8000,
    apiKey,
    maxConcurrent: intFlag("max-concurrent", values["max-concurrent"], 1, 4096) ??
      DEFAULT_MAX_CONCURRENT,
    maxQueue: intFlag("max-queue", values["max-queue"], 0, 1_000_000) ?? DEFAULT_MAX_QUEUE,
    maxBodyBytes: intFlag("max-body-bytes", values["max-body-bytes"], 1, 1 << 30) ??
      DEFAULT_MAX_BODY_BYTES,
    bodyTimeoutMs: 1000 * (numberFlag(
      "body-timeout",
      values["body-timeout"],
      (v) => v > 0 && v <= 3600,
      "seconds, more than 0 and at most 3600",
    ) ?? DEFAULT_BODY_TIMEOUT_MS / 1000),
    help: values.help ?? false,
  };
}
