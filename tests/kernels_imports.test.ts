// core/kernels' files import each other without cycles (matmul.ts and texture.ts once did), and
// code outside the member reaches kernels through core/kernels/mod.ts only (the folders inside
// are free to move). The files still being rewritten elsewhere are the listed exceptions.
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const KERNELS = join(ROOT, "core", "kernels");

async function tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory && e.name !== "fixtures" && !e.name.startsWith(".")) {
      out.push(...await tsFiles(p));
    } else if (e.isFile && e.name.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** Relative imports and re-exports of a file, resolved to absolute paths. */
function importsOf(file: string, text: string): string[] {
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)].map((m) => m[1]);
  return specs.map((s) => resolve(dirname(file), s));
}

/** A cycle in the graph as a list of files (first = last), or null. */
export function findCycle(graph: Map<string, string[]>): string[] | null {
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (n: string): string[] | null => {
    state.set(n, "open");
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      if (!graph.has(m)) continue;
      if (state.get(m) === "open") return [...stack.slice(stack.indexOf(m)), m];
      if (!state.has(m)) {
        const c = visit(m);
        if (c) return c;
      }
    }
    stack.pop();
    state.set(n, "done");
    return null;
  };
  for (const n of graph.keys()) {
    if (!state.has(n)) {
      const c = visit(n);
      if (c) return c;
    }
  }
  return null;
}

Deno.test("findCycle finds a two-file cycle and accepts a chain", () => {
  assert.deepEqual(
    findCycle(new Map([["a", ["b"]], ["b", ["a"]], ["c", ["a"]]])),
    ["a", "b", "a"],
  );
  assert.equal(findCycle(new Map([["a", ["b"]], ["b", ["c"]], ["c", []]])), null);
});

Deno.test("core/kernels has no import cycle", async () => {
  const graph = new Map<string, string[]>();
  for (const f of await tsFiles(KERNELS)) {
    graph.set(f, importsOf(f, await Deno.readTextFile(f)).filter((p) => p.startsWith(KERNELS)));
  }
  const cycle = findCycle(graph);
  assert.equal(cycle, null, `import cycle: ${cycle?.map((f) => relative(KERNELS, f)).join(" → ")}`);
});

/** Files being rewritten by another change; they import kernel files by path until then. */
const PENDING: string[] = [];

Deno.test("code outside core/kernels imports kernels only through core/kernels/mod.ts", async () => {
  const bad: string[] = [];
  for (const top of ["core", "train", "serve", "eval", "bench", "bot", "data", "tests"]) {
    const dir = join(ROOT, top);
    try {
      await Deno.stat(dir);
    } catch {
      continue;
    }
    for (const f of await tsFiles(dir)) {
      const rel = relative(ROOT, f);
      if (f.startsWith(KERNELS + "/") || PENDING.some((p) => rel.startsWith(p))) continue;
      for (const target of importsOf(f, await Deno.readTextFile(f))) {
        if (target.startsWith(KERNELS + "/") && target !== join(KERNELS, "mod.ts")) {
          bad.push(`${rel} imports ${relative(ROOT, target)}`);
        }
      }
    }
  }
  assert.deepEqual(bad, [], "import core/kernels/mod.ts instead");
});
