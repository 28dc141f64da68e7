/**
 * Whether an opt-out switch of the loader (`MEDGLM_NO_MMAP`, `MEDGLM_NO_HUGE_PAGES`) is set to
 * "1". Queried first: without env permission the switch reads as unset, never prompts or throws.
 */
export function envSwitch(variable: string): boolean {
  try {
    const env = Deno.permissions.querySync({ name: "env", variable });
    return env.state === "granted" && Deno.env.get(variable) === "1";
  } catch {
    return false;
  }
}
