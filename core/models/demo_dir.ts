/**
 * Where the project's shipped demo model lives (`models/demo/` at the repository root), resolved
 * from this module's URL so that it is found however a command is started.
 */
export const DEMO_MODEL_DIR: string = new URL("../../models/demo", import.meta.url).pathname
  .replace(/\/$/, "");
