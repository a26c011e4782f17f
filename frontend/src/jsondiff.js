// A small, readable diff of two JSON values: the paths that changed, were added or were
// removed. Objects are compared key by key and arrays index by index (an item inserted at
// the front shows as every later index changed: a person reads that fine for the short
// arrays keys hold, and it needs no alignment algorithm). `undefined` stands for an
// absent value (a removed key), so a diff against it is one added or removed root.

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

// Bytes (a Uint8Array) are one value, compared by content, not an object of indices.
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);

// `a.b[2]["odd key"]`: the path as JavaScript would spell it; "" is the whole value.
function child(path, key) {
  if (typeof key === "number") return `${path}[${key}]`;
  if (IDENTIFIER.test(key)) return path ? `${path}.${key}` : key;
  return `${path}[${JSON.stringify(key)}]`;
}

function same(a, b) {
  if (typeof a === "bigint" || typeof b === "bigint") return String(a) === String(b);
  if (a instanceof Uint8Array && b instanceof Uint8Array) return a.length === b.length && a.every((byte, i) => byte === b[i]);
  return a === b || (Number.isNaN(a) && Number.isNaN(b));
}

/** [{kind: "changed" | "added" | "removed", path, before, after}] from `before` to `after`. */
export function jsonDiff(before, after, path = "", out = []) {
  if (isObject(before) && isObject(after)) {
    for (const key of Object.keys(before)) {
      if (!Object.hasOwn(after, key)) out.push({ kind: "removed", path: child(path, key), before: before[key] });
    }
    for (const key of Object.keys(after)) {
      if (Object.hasOwn(before, key)) jsonDiff(before[key], after[key], child(path, key), out);
      else out.push({ kind: "added", path: child(path, key), after: after[key] });
    }
  } else if (Array.isArray(before) && Array.isArray(after)) {
    const length = Math.max(before.length, after.length);
    for (let index = 0; index < length; index++) {
      if (index >= before.length) out.push({ kind: "added", path: child(path, index), after: after[index] });
      else if (index >= after.length) out.push({ kind: "removed", path: child(path, index), before: before[index] });
      else jsonDiff(before[index], after[index], child(path, index), out);
    }
  } else if (before === undefined && after !== undefined) {
    out.push({ kind: "added", path, after });
  } else if (after === undefined && before !== undefined) {
    out.push({ kind: "removed", path, before });
  } else if (!same(before, after)) {
    out.push({ kind: "changed", path, before, after });
  }
  return out;
}
