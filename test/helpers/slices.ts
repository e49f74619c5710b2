// Raw slices (as ExtentMap.rawSlices() and leases hand them out) laid back to back, to
// compare with exportRaw().

export function joined(slices: Iterable<Float64Array>): Float64Array {
  const list = [...slices];
  const out = new Float64Array(list.reduce((n, s) => n + s.length, 0));
  let at = 0;
  for (const s of list) {
    out.set(s, at);
    at += s.length;
  }
  return out;
}
