import assert from "node:assert/strict";
import { checkBoundaries, importsOf, readSources } from "./helpers/import_graph.ts";

Deno.test("members import each other only through mod.ts, downward, without cycles", async () => {
  const files = await readSources(new URL("../", import.meta.url));
  assert.ok(files.size > 100, `read only ${files.size} files`);
  assert.deepEqual(checkBoundaries(files), []);
});

Deno.test("the boundary check fails on a deliberately bad import", () => {
  const files = new Map([
    ["core/mod.ts", `export * from "./io/read.ts";\n`],
    ["core/io/read.ts", `import { x } from "../../base/mod.ts";\nexport const y = x;\n`],
    ["base/mod.ts", `export const x = 1;\n`],
    // data reaches into core's internal file
    ["data/mod.ts", `import { y } from "../core/io/read.ts";\nexport const z = y;\n`],
    // core depends upward on serve (through its mod.ts, still wrong)
    ["core/up.ts", `import { s } from "../serve/mod.ts";\nexport const u = s;\n`],
    ["serve/mod.ts", `export const s = 2;\n`],
    // two train files import each other
    ["train/a.ts", `import { b } from "./b.ts";\nexport const a = () => b;\n`],
    ["train/b.ts", `import { a } from "./a.ts";\nexport const b = () => a;\n`],
    // a type-only import back is fine: erased at run time
    ["train/c.ts", `import { d } from "./d.ts";\nexport type C = number;\nexport const c = d;\n`],
    ["train/d.ts", `import type { C } from "./c.ts";\nexport const d: C = 1;\n`],
    // tests may import internals, but not a kernel file past core/kernels/mod.ts
    ["tests/x.test.ts", `import { y } from "../core/io/read.ts";\nconsole.log(y);\n`],
    [
      "tests/k.test.ts",
      `import { mm } from "../core/kernels/matmul/matmul.ts";\nconsole.log(mm);\n`,
    ],
    ["core/kernels/matmul/matmul.ts", `export const mm = 1;\n`],
  ]);
  assert.deepEqual(
    [...checkBoundaries(files)].sort(),
    [
      "core/up.ts imports serve: core may not depend on serve (layering)",
      "data/mod.ts imports core/io/read.ts: another member's internal file (use core/mod.ts)",
      "import cycle: train/a.ts -> train/b.ts -> train/a.ts",
      "tests/k.test.ts imports core/kernels/matmul/matmul.ts: inside core/kernels (use core/kernels/mod.ts)",
    ].sort(),
  );
});

Deno.test("imports are read from every statement form, comments ignored", () => {
  const src = [
    `import { a, type B } from "./a.ts";`,
    `import type { C } from "../c.ts";`,
    `export * from "./e.ts";`,
    `export { f } from "./f.ts";`,
    `// import { g } from "./g.ts";`,
    `/* import { h } from "./h.ts"; */`,
    `const m = await import("./m.ts");`,
    `import {`,
    `  n,`,
    `} from "./n.ts";`,
  ].join("\n");
  const edges = importsOf("x/y/z.ts", src);
  assert.deepEqual(edges.map((e) => [e.to, e.typeOnly]), [
    ["x/y/a.ts", false],
    ["x/c.ts", true],
    ["x/y/e.ts", false],
    ["x/y/f.ts", false],
    ["x/y/n.ts", false],
    ["x/y/m.ts", false],
  ]);
});
