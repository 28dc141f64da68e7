/**
 * Transparent huge pages for the large host allocations a load makes through the runtime (on a
 * software adapter a weight's texture or buffer is ordinary anonymous memory of this process).
 *
 * Why: the first write to fresh memory takes one page fault per 4 KiB page, and on this machine
 * (a VM, with memory-cgroup accounting) those faults cost as much as the copy itself: filling a
 * 128 MiB f16 texture took 0.75 CPU s/GB with 4 KiB pages and 0.52–0.67 with the same memory
 * advised as huge pages (one fault per 2 MiB). The kernel gives huge pages to anonymous memory
 * only when asked (`madvise(MADV_HUGEPAGE)`) under the usual "madvise" THP setting, and the
 * runtime's allocator does not ask; so the load looks up the mappings an allocation created
 * (/proc/self/maps) and advises them.
 *
 * Only from free memory: when the kernel has no free 2 MiB runs it compacts or reclaims memory to
 * make them, which cost more than the faults saved (a full 28-layer load, 14 GB resident beside
 * the page cache: 28.5 s advised against 21.4 s not). So an allocation is advised only while
 * MemFree exceeds it by {@link FREE_MARGIN_BYTES}.
 *
 * Best effort: only on Linux with THP in "madvise" mode, with the ffi and read permissions, and
 * libc reachable; anything else leaves the allocation as it is (the load is correct either way).
 * `MEDGLM_NO_HUGE_PAGES=1` turns it off (to measure against, or where the kernel's compaction for
 * huge pages costs more than the faults it saves).
 */

import { envSwitch } from "./env_switch.ts";
import { type Libc, libc } from "./libc.ts";

/** Allocations smaller than this are left alone (a huge page is 2 MiB). */
const MIN_BYTES = 8 * 2 ** 20;
const MADV_HUGEPAGE = 14;
/** Free memory left beside an advised allocation (see the module doc). */
const FREE_MARGIN_BYTES = 2 * 2 ** 30;
const HUGE = 2n ** 21n;

let advising: Libc | null | undefined;

function madviseLib(): Libc | null {
  if (advising !== undefined) return advising;
  advising = null;
  try {
    if (Deno.build.os !== "linux") return null;
    if (envSwitch("MEDGLM_NO_HUGE_PAGES")) return null;
    const maps = Deno.permissions.querySync({ name: "read", path: "/proc/self/maps" });
    if (maps.state !== "granted") return null;
    const mode = Deno.readTextFileSync("/sys/kernel/mm/transparent_hugepage/enabled");
    // "[always]": every mapping gets them already; "[never]": none may.
    if (!mode.includes("[madvise]")) return null;
    advising = libc();
  } catch {
    advising = null;
  }
  return advising;
}

/** MemFree (memory the kernel has not handed out at all, page cache excluded); 0 if unknown. */
function freeBytes(): number {
  try {
    const m = /^MemFree:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/meminfo"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Anonymous writable mappings of at least MIN_BYTES: start → end. */
function largeAnonymousMappings(): Map<bigint, bigint> {
  const out = new Map<bigint, bigint>();
  for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
    // "start-end perms offset dev inode [path]": anonymous mappings have no path.
    const f = line.split(/\s+/);
    if (f.length < 5 || f[5] || !f[1].startsWith("rw")) continue;
    const dash = f[0].indexOf("-");
    const start = BigInt(`0x${f[0].slice(0, dash)}`), end = BigInt(`0x${f[0].slice(dash + 1)}`);
    if (end - start >= BigInt(MIN_BYTES)) out.set(start, end);
  }
  return out;
}

/**
 * Runs `allocate` (which makes a host allocation of about `bytes`, not yet written) and advises
 * the mappings it created as huge pages, so that the writes that fill it fault once per 2 MiB.
 * A mapping the kernel merged with a neighbour is advised whole (harmless: pages already there
 * stay as they are).
 */
export function withHugePages<T>(bytes: number, allocate: () => T): T {
  const lib = bytes >= MIN_BYTES && freeBytes() >= bytes + FREE_MARGIN_BYTES ? madviseLib() : null;
  if (!lib) return allocate();
  let before: Map<bigint, bigint>;
  try {
    before = largeAnonymousMappings();
  } catch {
    return allocate();
  }
  const out = allocate();
  try {
    for (const [start, end] of largeAnonymousMappings()) {
      if (before.get(start) === end) continue;
      const lo = (start + HUGE - 1n) / HUGE * HUGE, hi = end / HUGE * HUGE;
      if (hi > lo) lib.symbols.madvise(lo, hi - lo, MADV_HUGEPAGE);
    }
  } catch {
    // Advice only: the allocation is good without it.
  }
  return out;
}
