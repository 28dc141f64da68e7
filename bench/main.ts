/**
 * `deno task bench [name ...]`: runs the benchmarks (all, or the named ones) one after another.
 * Each prints its own table of ratios against a baseline measured in the same run.
 */

type BenchModule = { bench: () => Promise<void> };

// Imported lazily so that one benchmark's dependencies (onnxruntime, a browser, …) load only
// when it runs.
export const BENCHES: Record<string, () => Promise<BenchModule>> = {
  tokenizer: () => import("./tokenizer.ts"),
  data: () => import("./data.ts"),
  "data-memory": () => import("./data_memory.ts"),
  dispatch: () => import("./dispatch.ts"),
  matmul: () => import("./matmul.ts"),
  model: () => import("./model.ts"),
  llama: () => import("./llama.ts"),
  train: () => import("./train.ts"),
  "train-step": () => import("./train_step.ts"),
  onnx: () => import("./onnx.ts"),
  engine: () => import("./engine.ts"),
  gpu: () => import("./gpu.ts"),
  http: () => import("./http.ts"),
  eval: () => import("./eval.ts"),
  "real-size": () => import("./real_size.ts"),
  quant: () => import("./quant.ts"),
  qlora: () => import("./qlora.ts"),
};

/**
 * The benchmark names among the arguments: flags (`--name=value`, or `--name value`) are left to
 * the benchmarks that read them (`gpu`: `--peak-gflops`, `--bandwidth-gbs`, `--size`; `engine`:
 * `--baseline`, and `--decode-only`, which takes no value: give it last or before another flag).
 */
export function benchNames(args: readonly string[]): string[] {
  const names: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i].startsWith("--")) {
      if (!args[i].includes("=") && i + 1 < args.length && !args[i + 1].startsWith("--")) i++;
    } else names.push(args[i]);
  }
  return names;
}

export async function runBenches(names: string[]): Promise<number> {
  const unknown = names.filter((n) => !(n in BENCHES));
  if (unknown.length > 0) {
    console.error(
      `bench: unknown benchmark ${unknown.join(", ")}; choose from ${
        Object.keys(BENCHES).join(", ")
      }`,
    );
    return 2;
  }
  for (const name of names.length > 0 ? names : Object.keys(BENCHES)) {
    console.log(`\n=== ${name} ===`);
    const started = performance.now();
    await (await BENCHES[name]()).bench();
    console.log(`(${name}: ${((performance.now() - started) / 1000).toFixed(1)} s)`);
  }
  return 0;
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(
      `usage: deno task bench [${Object.keys(BENCHES).join("|")} ...] ` +
        "[--peak-gflops=N --bandwidth-gbs=N --size=N (gpu)] [--baseline=REF|none --decode-only --small (engine)]",
    );
    Deno.exit(0);
  }
  Deno.exit(await runBenches(benchNames(Deno.args)));
}
