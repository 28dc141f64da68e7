// @medglm/bench public entry.
export {};
