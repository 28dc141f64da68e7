// @medglm/bench: the benchmark registry and runner behind `deno task bench`.
export { BENCHES, runBenches } from "./main.ts";
