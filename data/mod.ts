// @medglm/data public entry.
export {};
