/**
 * Data build peak memory against input size: generates JSON-array sources of increasing size
 * (default 20 MB and 200 MB, one file each, like Alpaca-CoT's single 581 MB file), builds each in
 * a child process and reads the child's peak resident set (VmHWM, Linux). Bounded memory means
 * the peak does not grow with the input (the de-duplication hashes and a few numbers per record
 * aside). `deno run -A bench/data_memory.ts [MB ...] [--no-tokens] [--heap=MB]`
 * (`deno task bench data-memory` runs the defaults); `--heap=MB` caps V8's heap, so the build must
 * fit it: the peak RSS without a cap is mostly garbage V8 has not yet needed to collect.
 */

import { buildDataset } from "../data/mod.ts";

const TOKENIZER = new URL("../tests/fixtures/chatglm-tokenizer", import.meta.url).pathname;
const SYMPTOMS = ["头痛", "发热", "咳嗽", "失眠", "胃痛", "腹泻", "过敏", "高血压"];

/** Writes a JSON array of about `mb` megabytes, record by record (never whole in memory). */
async function writeSource(path: string, mb: number): Promise<number> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const enc = new TextEncoder();
  let bytes = 0, n = 0;
  let block: string[] = ["[\n"];
  while (bytes < mb * 1e6) {
    const s = SYMPTOMS[n % SYMPTOMS.length];
    const rec = JSON.stringify({
      instruction: `病例${n}：最近${s}已经${1 + (n % 14)}天了，应该怎么处理？`,
      input: n % 3 === 0 ? `年龄${18 + (n % 60)}岁，既往体健。` : "",
      output: `注意休息，清淡饮食，规律作息。如果${s}持续不缓解或加重，请及时就医（编号${n}）。` +
        "按医嘱用药，不要自行加量；记录症状变化，复诊时告诉医生。".repeat(1 + (n % 3)),
    });
    block.push(n === 0 ? rec : ",\n" + rec);
    bytes += rec.length * 2;
    n++;
    if (block.length >= 10000) {
      await file.write(enc.encode(block.join("")));
      block = [];
    }
  }
  block.push("\n]\n");
  await file.write(enc.encode(block.join("")));
  file.close();
  return n;
}

function peakRssMb(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

// child: build one input, print JSON
async function child(dir: string, tokens: boolean): Promise<void> {
  const t = performance.now();
  const res = await buildDataset({
    name: "mem",
    sources: [{ name: "syn", paths: ["src.json"] }],
    tokens: tokens ? { tokenizer: TOKENIZER, maxSourceLength: 256, maxTargetLength: 256 } : null,
  }, { baseDir: dir, out: `${dir}/out`, progress: false });
  console.log(JSON.stringify({
    records: res.manifest.counts.read,
    secs: (performance.now() - t) / 1000,
    peakMb: peakRssMb(),
  }));
}

export async function bench(sizes = [20, 200], tokens = true, heapMb?: number): Promise<void> {
  const rows: string[][] = [["input MB", "records", "peak RSS MB", "RSS / input", "records/min"]];
  for (const mb of sizes) {
    const dir = await Deno.makeTempDir({ prefix: "medglm-bench-mem-" });
    try {
      await writeSource(`${dir}/src.json`, mb);
      const size = (await Deno.stat(`${dir}/src.json`)).size / 1e6;
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-all",
          // a V8 heap limit: the build must finish inside it, whatever the input size
          ...(heapMb ? [`--v8-flags=--max-old-space-size=${heapMb}`] : []),
          import.meta.filename!,
          "--child",
          dir,
          String(tokens),
        ],
        stderr: "inherit",
      }).output();
      if (!out.success) throw new Error(`child build of ${mb} MB failed`);
      const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
      rows.push([
        size.toFixed(0),
        String(r.records),
        r.peakMb.toFixed(0),
        (r.peakMb / size).toFixed(2),
        (r.records / r.secs * 60).toFixed(0),
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log(
    `data build peak memory (${tokens ? "with" : "without"} tokens${
      heapMb ? `, V8 heap limit ${heapMb} MB` : ""
    })`,
  );
  for (const r of rows) console.log(r.map((v, c) => v.padStart(w[c])).join("  "));
}

if (import.meta.main) {
  if (Deno.args[0] === "--child") await child(Deno.args[1], Deno.args[2] === "true");
  else {
    const tokens = !Deno.args.includes("--no-tokens");
    const sizes = Deno.args.filter((a) => /^\d+$/.test(a)).map(Number);
    const heap = Deno.args.find((a) => a.startsWith("--heap="));
    await bench(sizes.length ? sizes : undefined, tokens, heap ? Number(heap.slice(7)) : undefined);
  }
}
