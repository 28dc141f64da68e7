/**
 * The workspace's import rules, checked on source text: members import each other only through
 * their `mod.ts`, member edges point down the layering (base below core below data below train
 * below serve below eval/bot below demo below bench), sealed folders (core/kernels, whose per-op
 * folders are free to move) are reached from outside only through their `mod.ts`, and no file
 * imports itself in a cycle.
 */

/** Members from the bottom up; a member may import only members on a lower layer. */
export const MEMBER_LAYERS: Record<string, number> = {
  base: 0,
  core: 1,
  data: 2,
  train: 3,
  serve: 4,
  eval: 5,
  bot: 5,
  demo: 6,
  bench: 7,
};

/** Folders that code outside them reaches only through their own `mod.ts`. */
export const SEALED_FOLDERS: readonly string[] = ["core/kernels"];

export interface ImportEdge {
  from: string;
  to: string;
  /** `import type` only: erased at run time, so it cannot form a load cycle. */
  typeOnly: boolean;
}

const STATIC =
  /(?:^|\n)\s*(import|export)\s+(type\s+)?(?:[\w$*\s{},]*?\s+from\s+)?["'](\.\.?\/[^"']+)["']/g;
const DYNAMIC = /import\(\s*["'](\.\.?\/[^"']+)["']\s*\)/g;

/** Relative imports of one file, resolved to repository paths. */
export function importsOf(path: string, source: string): ImportEdge[] {
  const text = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1");
  const out: ImportEdge[] = [];
  for (const m of text.matchAll(STATIC)) {
    const clause = m[0];
    const typeOnly = !!m[2] || (/\{/.test(clause) && allTypeNames(clause));
    out.push({ from: path, to: resolvePath(path, m[3]), typeOnly });
  }
  for (const m of text.matchAll(DYNAMIC)) {
    out.push({ from: path, to: resolvePath(path, m[1]), typeOnly: false });
  }
  return out;
}

function allTypeNames(clause: string): boolean {
  const inner = /\{([^}]*)\}/.exec(clause)?.[1] ?? "";
  const names = inner.split(",").map((s) => s.trim()).filter(Boolean);
  return names.length > 0 && names.every((n) => n.startsWith("type "));
}

function resolvePath(from: string, spec: string): string {
  const parts = from.split("/").slice(0, -1);
  for (const seg of spec.split("/")) {
    if (seg === "." || seg === "") continue;
    if (seg === "..") parts.pop();
    else parts.push(seg);
  }
  return parts.join("/");
}

/** The member a repository path belongs to, or null (tests, scripts, the root mod.ts). */
export function memberOf(path: string): string | null {
  const top = path.split("/")[0];
  return path.includes("/") && top in MEMBER_LAYERS ? top : null;
}

/**
 * Every broken rule in `files` (repository path → source): internal imports across members,
 * upward or sideways member edges, and import cycles between files (type-only imports excepted).
 */
export function checkBoundaries(files: ReadonlyMap<string, string>): string[] {
  const problems: string[] = [];
  const graph = new Map<string, string[]>();
  for (const [path, source] of files) {
    const from = memberOf(path);
    const edges = importsOf(path, source);
    graph.set(path, edges.filter((e) => !e.typeOnly).map((e) => e.to));
    for (const e of edges) {
      for (const sealed of SEALED_FOLDERS) {
        const inside = (p: string) => p.startsWith(`${sealed}/`);
        if (inside(e.to) && !inside(path) && e.to !== `${sealed}/mod.ts`) {
          problems.push(`${path} imports ${e.to}: inside ${sealed} (use ${sealed}/mod.ts)`);
        }
      }
    }
    if (!from) continue;
    for (const e of edges) {
      const to = memberOf(e.to);
      if (!to || to === from) continue;
      if (e.to !== `${to}/mod.ts`) {
        problems.push(`${path} imports ${e.to}: another member's internal file (use ${to}/mod.ts)`);
      }
      if (MEMBER_LAYERS[to] >= MEMBER_LAYERS[from]) {
        problems.push(`${path} imports ${to}: ${from} may not depend on ${to} (layering)`);
      }
    }
  }
  for (const cycle of findCycles(graph)) problems.push(`import cycle: ${cycle.join(" -> ")}`);
  return problems;
}

/** One representative cycle per strongly connected set of files (Tarjan). */
function findCycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>(), low = new Map<string, number>();
  const stack: string[] = [], onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      const self = (graph.get(v) ?? []).includes(v);
      if (scc.length > 1 || self) cycles.push([...scc.reverse(), scc[0]]);
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) visit(v);
  return cycles;
}

/** Every `.ts` file of the repository (fixtures excluded), path → source. */
export async function readSources(root: URL): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: URL, prefix: string) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.name.startsWith(".") || e.name === "node_modules") continue;
      const path = prefix ? `${prefix}/${e.name}` : e.name;
      if (path === "tests/fixtures" || path === "models" || path === "runs" || path === "out") {
        continue;
      }
      if (e.isDirectory) await walk(new URL(`${e.name}/`, dir), path);
      else if (e.name.endsWith(".ts")) {
        out.set(path, await Deno.readTextFile(new URL(e.name, dir)));
      }
    }
  };
  await walk(root, "");
  return out;
}
