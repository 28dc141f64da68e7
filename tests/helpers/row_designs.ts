// Registers a kernel test once per row-kernel design (core/kernels/common.ts `rowPlan`): the
// software adapter the tests run on would otherwise only ever exercise its own design.
import { getGpu } from "../../core/gpu/mod.ts";
import { type RowDesign, setRowDesign } from "../../core/kernels/mod.ts";

export function rowDesignTest(name: string, fn: () => Promise<void>): void {
  for (const design of ["invocation", "workgroup"] as RowDesign[]) {
    Deno.test(`${name} [${design} per row]`, async () => {
      const gpu = await getGpu();
      setRowDesign(gpu, design);
      try {
        await fn();
      } finally {
        setRowDesign(gpu, "auto");
      }
    });
  }
}
