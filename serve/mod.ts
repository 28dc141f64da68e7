// @medglm/serve public entry.
export {};
