// @medglm/core public entry.
export {};
